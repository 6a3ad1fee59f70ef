//! [`UntilStopped`]: a result stream that ends with an error when a stop future (a deadline, a
//! cancel) resolves first, dropping the stream it wraps (and with it the query) at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

/// The engine error that stops a query: its deadline passing, or `cancel` firing.
pub async fn signal(
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) -> crate::Error {
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => crate::Error::Timeout(timeout),
        _ = cancel.cancelled() => crate::Error::Cancelled,
    }
}

/// `inner`'s items until `stop` resolves; then `stop`'s error, and nothing more. `guard` is
/// dropped with the inner stream, whichever way it ends.
pub struct UntilStopped<S, E, G = ()> {
    inner: Option<S>,
    stop: Pin<Box<dyn Future<Output = E> + Send>>,
    guard: Option<G>,
}

impl<S, E, G> UntilStopped<S, E, G> {
    pub fn new(inner: S, stop: impl Future<Output = E> + Send + 'static, guard: G) -> Self {
        Self {
            inner: Some(inner),
            stop: Box::pin(stop),
            guard: Some(guard),
        }
    }

    fn end(&mut self) {
        self.inner = None;
        self.guard = None;
    }
}

impl<S, T, E, G> Stream for UntilStopped<S, E, G>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    G: Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = inner.poll_next_unpin(cx);
        match polled {
            Poll::Ready(Some(Ok(_))) => polled,
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                self.end();
                polled
            }
            Poll::Pending => match self.stop.as_mut().poll(cx) {
                Poll::Ready(e) => {
                    self.end();
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ends_with_the_stop_error_and_drops_the_stream() {
        let endless = futures::stream::pending::<Result<u8, &str>>();
        let mut s = UntilStopped::new(endless, async { "stopped" }, ());
        assert_eq!(s.next().await, Some(Err("stopped")));
        assert_eq!(s.next().await, None);
        let items = futures::stream::iter([Ok(1), Ok(2)]);
        let s = UntilStopped::new(items, futures::future::pending::<&str>(), ());
        assert_eq!(s.collect::<Vec<_>>().await, vec![Ok(1), Ok(2)]);
    }
}
