//! Optional authentication of Flight calls: bearer tokens and basic credentials from the
//! config, each optionally bound to one tenant.
//!
//! With no credentials configured every call is accepted (the tenant is the `x-scope-orgid`
//! header, as on the other interfaces). With credentials, every call needs an `authorization`
//! header:
//! - `Bearer <token>`: a configured token, or a session token from a handshake;
//! - `Basic <base64 user:password>`: configured basic credentials.
//!
//! A Flight `Handshake` with valid credentials answers with an `authorization: Bearer <token>`
//! header, which is how pyarrow's `authenticate_basic_token` and the ADBC driver's
//! username/password options log in. A credential bound to a tenant reads only that tenant:
//! its calls get that tenant when they send no `x-scope-orgid`, and PermissionDenied when they
//! name another.

use base64::Engine as _;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// What a credential is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Sent as `authorization: Bearer <token>`.
    Bearer(String),
    /// Sent as `authorization: Basic <base64 user:password>`, or through a handshake.
    Basic { username: String, password: String },
}

/// One accepted credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub secret: Secret,
    /// When set, the only tenant this credential may read.
    pub tenant: Option<String>,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No valid credentials (HTTP 401, gRPC Unauthenticated).
    Unauthenticated,
    /// Valid credentials, but not for the tenant asked (HTTP 403, gRPC PermissionDenied).
    PermissionDenied(String),
}

/// Credentials a server accepts at most (a config limit, checked at start).
pub const MAX_CREDENTIALS: usize = 1_000;

/// The authenticator of a Flight server.
#[derive(Debug, Default)]
pub struct Auth {
    credentials: Vec<Credential>,
    /// The session token a handshake hands out for each credential: the configured token of
    /// a bearer credential, a fresh random one for basic credentials.
    tokens: Vec<String>,
}

fn unauthenticated() -> Status {
    Status::unauthenticated(
        "authentication required: send `authorization: Bearer <token>` or `Basic <credentials>`, or log in with a handshake",
    )
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random session token: 256 bits, hex.
fn session_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    /// An authenticator accepting `credentials`; none means authentication is off.
    pub fn new(credentials: Vec<Credential>) -> Result<Self, String> {
        if credentials.len() > MAX_CREDENTIALS {
            return Err(format!("at most {MAX_CREDENTIALS} flight credentials"));
        }
        for c in &credentials {
            match &c.secret {
                Secret::Bearer(t) if t.is_empty() => return Err("a flight bearer token is empty".into()),
                Secret::Basic { username, .. } if username.is_empty() || username.contains(':') => {
                    return Err("a flight basic username is empty or contains ':'".into());
                }
                _ => {}
            }
        }
        let tokens = credentials
            .iter()
            .map(|c| match &c.secret {
                Secret::Bearer(token) => token.clone(),
                Secret::Basic { .. } => session_token(),
            })
            .collect();
        Ok(Self { credentials, tokens })
    }

    /// `true` when calls need credentials.
    pub fn enabled(&self) -> bool {
        !self.credentials.is_empty()
    }

    /// The credential an `authorization` header value proves.
    fn credential(&self, header: &str) -> Option<usize> {
        let (scheme, value) = header.trim().split_once(' ')?;
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.tokens.iter().position(|token| same(token, value));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':')?;
            return self.credentials.iter().position(|c| {
                matches!(&c.secret, Secret::Basic { username, password: p } if same(username, user) && same(p, password))
            });
        }
        None
    }

    /// Checks a call's credentials and pins a tenant-bound credential's tenant into the
    /// call's `x-scope-orgid`. Unauthenticated without valid credentials, PermissionDenied
    /// for another tenant.
    pub fn authorize<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        if self.enabled() {
            self.check(request)?;
        }
        Ok(())
    }

    /// The credential a call proves (auth on), with its tenant pinned into the call.
    fn check<T>(&self, request: &mut Request<T>) -> Result<usize, Status> {
        let decision = self.decide(
            request.metadata().get("authorization").map(|v| v.as_bytes()),
            request
                .metadata()
                .get(tracehouse_sql::TENANT_HEADER)
                .map(|v| v.as_bytes()),
        );
        match decision {
            Ok((index, Some(tenant))) => {
                let value = MetadataValue::try_from(tenant.as_str())
                    .map_err(|_| Status::internal("configured tenant is not a valid header"))?;
                request.metadata_mut().insert(tracehouse_sql::TENANT_HEADER, value);
                Ok(index)
            }
            Ok((index, None)) => Ok(index),
            Err(Denied::Unauthenticated) => Err(unauthenticated()),
            Err(Denied::PermissionDenied(m)) => Err(Status::permission_denied(m)),
        }
    }

    /// The protocol-neutral check (auth on): the credential an `authorization` value proves,
    /// and the tenant to put in place of the asked one (`Some` for a tenant-bound credential
    /// asked for no tenant). Asking a tenant-bound credential for another tenant is refused.
    pub fn decide(
        &self,
        authorization: Option<&[u8]>,
        asked: Option<&[u8]>,
    ) -> Result<(usize, Option<String>), Denied> {
        let header = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or(Denied::Unauthenticated)?;
        let index = self.credential(header).ok_or(Denied::Unauthenticated)?;
        let Some(tenant) = &self.credentials[index].tenant else {
            return Ok((index, None));
        };
        match asked.map(|a| String::from_utf8_lossy(a).trim().to_string()) {
            None => Ok((index, Some(tenant.clone()))),
            Some(a) if a.is_empty() => Ok((index, Some(tenant.clone()))),
            Some(a) if &a == tenant => Ok((index, None)),
            Some(_) => Err(Denied::PermissionDenied(format!(
                "these credentials read only tenant {tenant}"
            ))),
        }
    }

    /// The bearer token a handshake hands back for the call's credentials, if auth is on.
    pub fn handshake<T>(&self, request: &mut Request<T>) -> Result<Option<String>, Status> {
        if !self.enabled() {
            return Ok(None);
        }
        let index = self.check(request)?;
        Ok(Some(self.tokens[index].clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&'static str, &str)]) -> Request<()> {
        let mut r = Request::new(());
        for (k, v) in headers {
            r.metadata_mut().insert(*k, v.parse().unwrap());
        }
        r
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn off_accepts_everything() {
        let auth = Auth::new(vec![]).unwrap();
        assert!(auth.authorize(&mut request(&[])).is_ok());
        assert_eq!(auth.handshake(&mut request(&[])).unwrap(), None);
    }

    #[test]
    fn tokens_basic_and_sessions() {
        let auth = Auth::new(vec![
            Credential {
                secret: Secret::Bearer("s3cret".into()),
                tenant: None,
            },
            Credential {
                secret: Secret::Basic {
                    username: "ana".into(),
                    password: "pw".into(),
                },
                tenant: Some("shop".into()),
            },
        ])
        .unwrap();
        let code = |h: &[(&'static str, &str)]| auth.authorize(&mut request(h)).map_err(|s| s.code());
        assert_eq!(code(&[]), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            code(&[("authorization", "Bearer wrong")]),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(&[("authorization", "Bearer s3cret")]), Ok(()));
        assert_eq!(
            code(&[("authorization", &basic("ana", "nope"))]),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(&[("authorization", "Basic !!!")]),
            Err(tonic::Code::Unauthenticated)
        );

        // Basic credentials bound to a tenant: pinned when absent, refused for another.
        let mut r = request(&[("authorization", &basic("ana", "pw"))]);
        auth.authorize(&mut r).unwrap();
        assert_eq!(r.metadata().get("x-scope-orgid").unwrap(), "shop");
        assert_eq!(
            code(&[("authorization", &basic("ana", "pw")), ("x-scope-orgid", "other")]),
            Err(tonic::Code::PermissionDenied)
        );

        // A handshake hands out a session token that carries the same binding.
        let token = auth
            .handshake(&mut request(&[("authorization", &basic("ana", "pw"))]))
            .unwrap()
            .unwrap();
        assert_eq!(token.len(), 64);
        let bearer = format!("Bearer {token}");
        assert_eq!(code(&[("authorization", &bearer), ("x-scope-orgid", "shop")]), Ok(()));
        assert_eq!(
            code(&[("authorization", &bearer), ("x-scope-orgid", "other")]),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            auth.handshake(&mut request(&[("authorization", "Bearer s3cret")]))
                .unwrap()
                .as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            auth.handshake(&mut request(&[])).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_config_is_refused() {
        let bearer = |t: &str| Credential {
            secret: Secret::Bearer(t.into()),
            tenant: None,
        };
        assert!(Auth::new(vec![bearer("")]).is_err());
        assert!(
            Auth::new(vec![Credential {
                secret: Secret::Basic {
                    username: "a:b".into(),
                    password: "x".into()
                },
                tenant: None
            }])
            .is_err()
        );
    }
}
