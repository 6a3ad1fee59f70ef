impl serde::Serialize for Exemplar {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.labels.is_empty() {
            len += 1;
        }
        if self.value != 0. {
            len += 1;
        }
        if self.timestamp_ms != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.Exemplar", len)?;
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if self.value != 0. {
            struct_ser.serialize_field("value", &self.value)?;
        }
        if self.timestamp_ms != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("timestampMs", ToString::to_string(&self.timestamp_ms).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Exemplar {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "labels",
            "value",
            "timestamp_ms",
            "timestampMs",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Labels,
            Value,
            TimestampMs,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "labels" => Ok(GeneratedField::Labels),
                            "value" => Ok(GeneratedField::Value),
                            "timestampMs" | "timestamp_ms" => Ok(GeneratedField::TimestampMs),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Exemplar;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.Exemplar")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Exemplar, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut labels__ = None;
                let mut value__ = None;
                let mut timestamp_ms__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Value => {
                            if value__.is_some() {
                                return Err(serde::de::Error::duplicate_field("value"));
                            }
                            value__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TimestampMs => {
                            if timestamp_ms__.is_some() {
                                return Err(serde::de::Error::duplicate_field("timestampMs"));
                            }
                            timestamp_ms__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Exemplar {
                    labels: labels__.unwrap_or_default(),
                    value: value__.unwrap_or_default(),
                    timestamp_ms: timestamp_ms__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.Exemplar", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for InstantSeries {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.labels.is_empty() {
            len += 1;
        }
        if self.value != 0. {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.InstantSeries", len)?;
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if self.value != 0. {
            struct_ser.serialize_field("value", &self.value)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for InstantSeries {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "labels",
            "value",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Labels,
            Value,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "labels" => Ok(GeneratedField::Labels),
                            "value" => Ok(GeneratedField::Value),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = InstantSeries;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.InstantSeries")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<InstantSeries, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut labels__ = None;
                let mut value__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Value => {
                            if value__.is_some() {
                                return Err(serde::de::Error::duplicate_field("value"));
                            }
                            value__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(InstantSeries {
                    labels: labels__.unwrap_or_default(),
                    value: value__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.InstantSeries", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for MetadataMetrics {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.inspected_bytes != 0 {
            len += 1;
        }
        if self.total_jobs != 0 {
            len += 1;
        }
        if self.completed_jobs != 0 {
            len += 1;
        }
        if self.total_blocks != 0 {
            len += 1;
        }
        if self.total_block_bytes != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.MetadataMetrics", len)?;
        if self.inspected_bytes != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("inspectedBytes", ToString::to_string(&self.inspected_bytes).as_str())?;
        }
        if self.total_jobs != 0 {
            struct_ser.serialize_field("totalJobs", &self.total_jobs)?;
        }
        if self.completed_jobs != 0 {
            struct_ser.serialize_field("completedJobs", &self.completed_jobs)?;
        }
        if self.total_blocks != 0 {
            struct_ser.serialize_field("totalBlocks", &self.total_blocks)?;
        }
        if self.total_block_bytes != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("totalBlockBytes", ToString::to_string(&self.total_block_bytes).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for MetadataMetrics {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "inspectedBytes",
            "totalJobs",
            "completedJobs",
            "totalBlocks",
            "totalBlockBytes",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            InspectedBytes,
            TotalJobs,
            CompletedJobs,
            TotalBlocks,
            TotalBlockBytes,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "inspectedBytes" => Ok(GeneratedField::InspectedBytes),
                            "totalJobs" => Ok(GeneratedField::TotalJobs),
                            "completedJobs" => Ok(GeneratedField::CompletedJobs),
                            "totalBlocks" => Ok(GeneratedField::TotalBlocks),
                            "totalBlockBytes" => Ok(GeneratedField::TotalBlockBytes),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = MetadataMetrics;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.MetadataMetrics")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<MetadataMetrics, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut inspected_bytes__ = None;
                let mut total_jobs__ = None;
                let mut completed_jobs__ = None;
                let mut total_blocks__ = None;
                let mut total_block_bytes__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::InspectedBytes => {
                            if inspected_bytes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("inspectedBytes"));
                            }
                            inspected_bytes__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalJobs => {
                            if total_jobs__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalJobs"));
                            }
                            total_jobs__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::CompletedJobs => {
                            if completed_jobs__.is_some() {
                                return Err(serde::de::Error::duplicate_field("completedJobs"));
                            }
                            completed_jobs__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalBlocks => {
                            if total_blocks__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalBlocks"));
                            }
                            total_blocks__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalBlockBytes => {
                            if total_block_bytes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalBlockBytes"));
                            }
                            total_block_bytes__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(MetadataMetrics {
                    inspected_bytes: inspected_bytes__.unwrap_or_default(),
                    total_jobs: total_jobs__.unwrap_or_default(),
                    completed_jobs: completed_jobs__.unwrap_or_default(),
                    total_blocks: total_blocks__.unwrap_or_default(),
                    total_block_bytes: total_block_bytes__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.MetadataMetrics", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for PartialStatus {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Complete => "COMPLETE",
            Self::Partial => "PARTIAL",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for PartialStatus {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "COMPLETE",
            "PARTIAL",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = PartialStatus;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "COMPLETE" => Ok(PartialStatus::Complete),
                    "PARTIAL" => Ok(PartialStatus::Partial),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for QueryInstantRequest {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.query.is_empty() {
            len += 1;
        }
        if self.start != 0 {
            len += 1;
        }
        if self.end != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.QueryInstantRequest", len)?;
        if !self.query.is_empty() {
            struct_ser.serialize_field("query", &self.query)?;
        }
        if self.start != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("start", ToString::to_string(&self.start).as_str())?;
        }
        if self.end != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("end", ToString::to_string(&self.end).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for QueryInstantRequest {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "query",
            "start",
            "end",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Query,
            Start,
            End,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "query" => Ok(GeneratedField::Query),
                            "start" => Ok(GeneratedField::Start),
                            "end" => Ok(GeneratedField::End),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = QueryInstantRequest;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.QueryInstantRequest")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<QueryInstantRequest, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut query__ = None;
                let mut start__ = None;
                let mut end__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Start => {
                            if start__.is_some() {
                                return Err(serde::de::Error::duplicate_field("start"));
                            }
                            start__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::End => {
                            if end__.is_some() {
                                return Err(serde::de::Error::duplicate_field("end"));
                            }
                            end__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(QueryInstantRequest {
                    query: query__.unwrap_or_default(),
                    start: start__.unwrap_or_default(),
                    end: end__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.QueryInstantRequest", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for QueryInstantResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.series.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        if self.status != 0 {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.QueryInstantResponse", len)?;
        if !self.series.is_empty() {
            struct_ser.serialize_field("series", &self.series)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        if self.status != 0 {
            let v = PartialStatus::try_from(self.status)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.status)))?;
            struct_ser.serialize_field("status", &v)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for QueryInstantResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "series",
            "metrics",
            "status",
            "message",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Series,
            Metrics,
            Status,
            Message,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "series" => Ok(GeneratedField::Series),
                            "metrics" => Ok(GeneratedField::Metrics),
                            "status" => Ok(GeneratedField::Status),
                            "message" => Ok(GeneratedField::Message),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = QueryInstantResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.QueryInstantResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<QueryInstantResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut series__ = None;
                let mut metrics__ = None;
                let mut status__ = None;
                let mut message__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Series => {
                            if series__.is_some() {
                                return Err(serde::de::Error::duplicate_field("series"));
                            }
                            series__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                        GeneratedField::Status => {
                            if status__.is_some() {
                                return Err(serde::de::Error::duplicate_field("status"));
                            }
                            status__ = Some(map_.next_value::<PartialStatus>()? as i32);
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(QueryInstantResponse {
                    series: series__.unwrap_or_default(),
                    metrics: metrics__,
                    status: status__.unwrap_or_default(),
                    message: message__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.QueryInstantResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for QueryRangeRequest {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.query.is_empty() {
            len += 1;
        }
        if self.start != 0 {
            len += 1;
        }
        if self.end != 0 {
            len += 1;
        }
        if self.step != 0 {
            len += 1;
        }
        if !self.query_mode.is_empty() {
            len += 1;
        }
        if self.exemplars != 0 {
            len += 1;
        }
        if self.max_series != 0 {
            len += 1;
        }
        if self.instant.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.QueryRangeRequest", len)?;
        if !self.query.is_empty() {
            struct_ser.serialize_field("query", &self.query)?;
        }
        if self.start != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("start", ToString::to_string(&self.start).as_str())?;
        }
        if self.end != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("end", ToString::to_string(&self.end).as_str())?;
        }
        if self.step != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("step", ToString::to_string(&self.step).as_str())?;
        }
        if !self.query_mode.is_empty() {
            struct_ser.serialize_field("queryMode", &self.query_mode)?;
        }
        if self.exemplars != 0 {
            struct_ser.serialize_field("exemplars", &self.exemplars)?;
        }
        if self.max_series != 0 {
            struct_ser.serialize_field("maxSeries", &self.max_series)?;
        }
        if let Some(v) = self.instant.as_ref() {
            struct_ser.serialize_field("instant", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for QueryRangeRequest {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "query",
            "start",
            "end",
            "step",
            "queryMode",
            "exemplars",
            "maxSeries",
            "instant",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Query,
            Start,
            End,
            Step,
            QueryMode,
            Exemplars,
            MaxSeries,
            Instant,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "query" => Ok(GeneratedField::Query),
                            "start" => Ok(GeneratedField::Start),
                            "end" => Ok(GeneratedField::End),
                            "step" => Ok(GeneratedField::Step),
                            "queryMode" => Ok(GeneratedField::QueryMode),
                            "exemplars" => Ok(GeneratedField::Exemplars),
                            "maxSeries" => Ok(GeneratedField::MaxSeries),
                            "instant" => Ok(GeneratedField::Instant),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = QueryRangeRequest;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.QueryRangeRequest")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<QueryRangeRequest, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut query__ = None;
                let mut start__ = None;
                let mut end__ = None;
                let mut step__ = None;
                let mut query_mode__ = None;
                let mut exemplars__ = None;
                let mut max_series__ = None;
                let mut instant__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Start => {
                            if start__.is_some() {
                                return Err(serde::de::Error::duplicate_field("start"));
                            }
                            start__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::End => {
                            if end__.is_some() {
                                return Err(serde::de::Error::duplicate_field("end"));
                            }
                            end__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Step => {
                            if step__.is_some() {
                                return Err(serde::de::Error::duplicate_field("step"));
                            }
                            step__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::QueryMode => {
                            if query_mode__.is_some() {
                                return Err(serde::de::Error::duplicate_field("queryMode"));
                            }
                            query_mode__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Exemplars => {
                            if exemplars__.is_some() {
                                return Err(serde::de::Error::duplicate_field("exemplars"));
                            }
                            exemplars__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::MaxSeries => {
                            if max_series__.is_some() {
                                return Err(serde::de::Error::duplicate_field("maxSeries"));
                            }
                            max_series__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Instant => {
                            if instant__.is_some() {
                                return Err(serde::de::Error::duplicate_field("instant"));
                            }
                            instant__ = map_.next_value()?;
                        }
                    }
                }
                Ok(QueryRangeRequest {
                    query: query__.unwrap_or_default(),
                    start: start__.unwrap_or_default(),
                    end: end__.unwrap_or_default(),
                    step: step__.unwrap_or_default(),
                    query_mode: query_mode__.unwrap_or_default(),
                    exemplars: exemplars__.unwrap_or_default(),
                    max_series: max_series__.unwrap_or_default(),
                    instant: instant__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.QueryRangeRequest", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for QueryRangeResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.series.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        if self.status != 0 {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.QueryRangeResponse", len)?;
        if !self.series.is_empty() {
            struct_ser.serialize_field("series", &self.series)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        if self.status != 0 {
            let v = PartialStatus::try_from(self.status)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.status)))?;
            struct_ser.serialize_field("status", &v)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for QueryRangeResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "series",
            "metrics",
            "status",
            "message",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Series,
            Metrics,
            Status,
            Message,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "series" => Ok(GeneratedField::Series),
                            "metrics" => Ok(GeneratedField::Metrics),
                            "status" => Ok(GeneratedField::Status),
                            "message" => Ok(GeneratedField::Message),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = QueryRangeResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.QueryRangeResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<QueryRangeResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut series__ = None;
                let mut metrics__ = None;
                let mut status__ = None;
                let mut message__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Series => {
                            if series__.is_some() {
                                return Err(serde::de::Error::duplicate_field("series"));
                            }
                            series__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                        GeneratedField::Status => {
                            if status__.is_some() {
                                return Err(serde::de::Error::duplicate_field("status"));
                            }
                            status__ = Some(map_.next_value::<PartialStatus>()? as i32);
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(QueryRangeResponse {
                    series: series__.unwrap_or_default(),
                    metrics: metrics__,
                    status: status__.unwrap_or_default(),
                    message: message__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.QueryRangeResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Sample {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.timestamp_ms != 0 {
            len += 1;
        }
        if self.value != 0. {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.Sample", len)?;
        if self.timestamp_ms != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("timestampMs", ToString::to_string(&self.timestamp_ms).as_str())?;
        }
        if self.value != 0. {
            struct_ser.serialize_field("value", &self.value)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Sample {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "timestamp_ms",
            "timestampMs",
            "value",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TimestampMs,
            Value,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "timestampMs" | "timestamp_ms" => Ok(GeneratedField::TimestampMs),
                            "value" => Ok(GeneratedField::Value),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Sample;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.Sample")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Sample, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut timestamp_ms__ = None;
                let mut value__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TimestampMs => {
                            if timestamp_ms__.is_some() {
                                return Err(serde::de::Error::duplicate_field("timestampMs"));
                            }
                            timestamp_ms__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Value => {
                            if value__.is_some() {
                                return Err(serde::de::Error::duplicate_field("value"));
                            }
                            value__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(Sample {
                    timestamp_ms: timestamp_ms__.unwrap_or_default(),
                    value: value__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.Sample", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchMetrics {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.inspected_traces != 0 {
            len += 1;
        }
        if self.inspected_bytes != 0 {
            len += 1;
        }
        if self.total_blocks != 0 {
            len += 1;
        }
        if self.completed_jobs != 0 {
            len += 1;
        }
        if self.total_jobs != 0 {
            len += 1;
        }
        if self.total_block_bytes != 0 {
            len += 1;
        }
        if self.inspected_spans != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchMetrics", len)?;
        if self.inspected_traces != 0 {
            struct_ser.serialize_field("inspectedTraces", &self.inspected_traces)?;
        }
        if self.inspected_bytes != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("inspectedBytes", ToString::to_string(&self.inspected_bytes).as_str())?;
        }
        if self.total_blocks != 0 {
            struct_ser.serialize_field("totalBlocks", &self.total_blocks)?;
        }
        if self.completed_jobs != 0 {
            struct_ser.serialize_field("completedJobs", &self.completed_jobs)?;
        }
        if self.total_jobs != 0 {
            struct_ser.serialize_field("totalJobs", &self.total_jobs)?;
        }
        if self.total_block_bytes != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("totalBlockBytes", ToString::to_string(&self.total_block_bytes).as_str())?;
        }
        if self.inspected_spans != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("inspectedSpans", ToString::to_string(&self.inspected_spans).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchMetrics {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "inspectedTraces",
            "inspectedBytes",
            "totalBlocks",
            "completedJobs",
            "totalJobs",
            "totalBlockBytes",
            "inspectedSpans",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            InspectedTraces,
            InspectedBytes,
            TotalBlocks,
            CompletedJobs,
            TotalJobs,
            TotalBlockBytes,
            InspectedSpans,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "inspectedTraces" => Ok(GeneratedField::InspectedTraces),
                            "inspectedBytes" => Ok(GeneratedField::InspectedBytes),
                            "totalBlocks" => Ok(GeneratedField::TotalBlocks),
                            "completedJobs" => Ok(GeneratedField::CompletedJobs),
                            "totalJobs" => Ok(GeneratedField::TotalJobs),
                            "totalBlockBytes" => Ok(GeneratedField::TotalBlockBytes),
                            "inspectedSpans" => Ok(GeneratedField::InspectedSpans),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchMetrics;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchMetrics")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchMetrics, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut inspected_traces__ = None;
                let mut inspected_bytes__ = None;
                let mut total_blocks__ = None;
                let mut completed_jobs__ = None;
                let mut total_jobs__ = None;
                let mut total_block_bytes__ = None;
                let mut inspected_spans__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::InspectedTraces => {
                            if inspected_traces__.is_some() {
                                return Err(serde::de::Error::duplicate_field("inspectedTraces"));
                            }
                            inspected_traces__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::InspectedBytes => {
                            if inspected_bytes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("inspectedBytes"));
                            }
                            inspected_bytes__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalBlocks => {
                            if total_blocks__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalBlocks"));
                            }
                            total_blocks__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::CompletedJobs => {
                            if completed_jobs__.is_some() {
                                return Err(serde::de::Error::duplicate_field("completedJobs"));
                            }
                            completed_jobs__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalJobs => {
                            if total_jobs__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalJobs"));
                            }
                            total_jobs__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::TotalBlockBytes => {
                            if total_block_bytes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("totalBlockBytes"));
                            }
                            total_block_bytes__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::InspectedSpans => {
                            if inspected_spans__.is_some() {
                                return Err(serde::de::Error::duplicate_field("inspectedSpans"));
                            }
                            inspected_spans__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(SearchMetrics {
                    inspected_traces: inspected_traces__.unwrap_or_default(),
                    inspected_bytes: inspected_bytes__.unwrap_or_default(),
                    total_blocks: total_blocks__.unwrap_or_default(),
                    completed_jobs: completed_jobs__.unwrap_or_default(),
                    total_jobs: total_jobs__.unwrap_or_default(),
                    total_block_bytes: total_block_bytes__.unwrap_or_default(),
                    inspected_spans: inspected_spans__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchMetrics", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchRequest {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.tags.is_empty() {
            len += 1;
        }
        if self.min_duration_ms != 0 {
            len += 1;
        }
        if self.max_duration_ms != 0 {
            len += 1;
        }
        if self.limit != 0 {
            len += 1;
        }
        if self.start != 0 {
            len += 1;
        }
        if self.end != 0 {
            len += 1;
        }
        if !self.query.is_empty() {
            len += 1;
        }
        if self.spans_per_span_set != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchRequest", len)?;
        if !self.tags.is_empty() {
            struct_ser.serialize_field("Tags", &self.tags)?;
        }
        if self.min_duration_ms != 0 {
            struct_ser.serialize_field("MinDurationMs", &self.min_duration_ms)?;
        }
        if self.max_duration_ms != 0 {
            struct_ser.serialize_field("MaxDurationMs", &self.max_duration_ms)?;
        }
        if self.limit != 0 {
            struct_ser.serialize_field("Limit", &self.limit)?;
        }
        if self.start != 0 {
            struct_ser.serialize_field("start", &self.start)?;
        }
        if self.end != 0 {
            struct_ser.serialize_field("end", &self.end)?;
        }
        if !self.query.is_empty() {
            struct_ser.serialize_field("Query", &self.query)?;
        }
        if self.spans_per_span_set != 0 {
            struct_ser.serialize_field("SpansPerSpanSet", &self.spans_per_span_set)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchRequest {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "Tags",
            "MinDurationMs",
            "MaxDurationMs",
            "Limit",
            "start",
            "end",
            "Query",
            "SpansPerSpanSet",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Tags,
            MinDurationMs,
            MaxDurationMs,
            Limit,
            Start,
            End,
            Query,
            SpansPerSpanSet,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "Tags" => Ok(GeneratedField::Tags),
                            "MinDurationMs" => Ok(GeneratedField::MinDurationMs),
                            "MaxDurationMs" => Ok(GeneratedField::MaxDurationMs),
                            "Limit" => Ok(GeneratedField::Limit),
                            "start" => Ok(GeneratedField::Start),
                            "end" => Ok(GeneratedField::End),
                            "Query" => Ok(GeneratedField::Query),
                            "SpansPerSpanSet" => Ok(GeneratedField::SpansPerSpanSet),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchRequest;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchRequest")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchRequest, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut tags__ = None;
                let mut min_duration_ms__ = None;
                let mut max_duration_ms__ = None;
                let mut limit__ = None;
                let mut start__ = None;
                let mut end__ = None;
                let mut query__ = None;
                let mut spans_per_span_set__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Tags => {
                            if tags__.is_some() {
                                return Err(serde::de::Error::duplicate_field("Tags"));
                            }
                            tags__ = Some(
                                map_.next_value::<std::collections::HashMap<_, _>>()?
                            );
                        }
                        GeneratedField::MinDurationMs => {
                            if min_duration_ms__.is_some() {
                                return Err(serde::de::Error::duplicate_field("MinDurationMs"));
                            }
                            min_duration_ms__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::MaxDurationMs => {
                            if max_duration_ms__.is_some() {
                                return Err(serde::de::Error::duplicate_field("MaxDurationMs"));
                            }
                            max_duration_ms__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Limit => {
                            if limit__.is_some() {
                                return Err(serde::de::Error::duplicate_field("Limit"));
                            }
                            limit__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Start => {
                            if start__.is_some() {
                                return Err(serde::de::Error::duplicate_field("start"));
                            }
                            start__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::End => {
                            if end__.is_some() {
                                return Err(serde::de::Error::duplicate_field("end"));
                            }
                            end__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("Query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::SpansPerSpanSet => {
                            if spans_per_span_set__.is_some() {
                                return Err(serde::de::Error::duplicate_field("SpansPerSpanSet"));
                            }
                            spans_per_span_set__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(SearchRequest {
                    tags: tags__.unwrap_or_default(),
                    min_duration_ms: min_duration_ms__.unwrap_or_default(),
                    max_duration_ms: max_duration_ms__.unwrap_or_default(),
                    limit: limit__.unwrap_or_default(),
                    start: start__.unwrap_or_default(),
                    end: end__.unwrap_or_default(),
                    query: query__.unwrap_or_default(),
                    spans_per_span_set: spans_per_span_set__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchRequest", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.traces.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchResponse", len)?;
        if !self.traces.is_empty() {
            struct_ser.serialize_field("traces", &self.traces)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "traces",
            "metrics",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Traces,
            Metrics,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "traces" => Ok(GeneratedField::Traces),
                            "metrics" => Ok(GeneratedField::Metrics),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut traces__ = None;
                let mut metrics__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Traces => {
                            if traces__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traces"));
                            }
                            traces__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                    }
                }
                Ok(SearchResponse {
                    traces: traces__.unwrap_or_default(),
                    metrics: metrics__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagValuesRequest {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.tag_name.is_empty() {
            len += 1;
        }
        if !self.query.is_empty() {
            len += 1;
        }
        if self.start != 0 {
            len += 1;
        }
        if self.end != 0 {
            len += 1;
        }
        if self.max_tag_values != 0 {
            len += 1;
        }
        if self.stale_value_threshold != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagValuesRequest", len)?;
        if !self.tag_name.is_empty() {
            struct_ser.serialize_field("tagName", &self.tag_name)?;
        }
        if !self.query.is_empty() {
            struct_ser.serialize_field("query", &self.query)?;
        }
        if self.start != 0 {
            struct_ser.serialize_field("start", &self.start)?;
        }
        if self.end != 0 {
            struct_ser.serialize_field("end", &self.end)?;
        }
        if self.max_tag_values != 0 {
            struct_ser.serialize_field("maxTagValues", &self.max_tag_values)?;
        }
        if self.stale_value_threshold != 0 {
            struct_ser.serialize_field("staleValueThreshold", &self.stale_value_threshold)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagValuesRequest {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "tagName",
            "query",
            "start",
            "end",
            "maxTagValues",
            "staleValueThreshold",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TagName,
            Query,
            Start,
            End,
            MaxTagValues,
            StaleValueThreshold,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "tagName" => Ok(GeneratedField::TagName),
                            "query" => Ok(GeneratedField::Query),
                            "start" => Ok(GeneratedField::Start),
                            "end" => Ok(GeneratedField::End),
                            "maxTagValues" => Ok(GeneratedField::MaxTagValues),
                            "staleValueThreshold" => Ok(GeneratedField::StaleValueThreshold),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagValuesRequest;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagValuesRequest")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagValuesRequest, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut tag_name__ = None;
                let mut query__ = None;
                let mut start__ = None;
                let mut end__ = None;
                let mut max_tag_values__ = None;
                let mut stale_value_threshold__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TagName => {
                            if tag_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tagName"));
                            }
                            tag_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Start => {
                            if start__.is_some() {
                                return Err(serde::de::Error::duplicate_field("start"));
                            }
                            start__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::End => {
                            if end__.is_some() {
                                return Err(serde::de::Error::duplicate_field("end"));
                            }
                            end__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::MaxTagValues => {
                            if max_tag_values__.is_some() {
                                return Err(serde::de::Error::duplicate_field("maxTagValues"));
                            }
                            max_tag_values__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::StaleValueThreshold => {
                            if stale_value_threshold__.is_some() {
                                return Err(serde::de::Error::duplicate_field("staleValueThreshold"));
                            }
                            stale_value_threshold__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(SearchTagValuesRequest {
                    tag_name: tag_name__.unwrap_or_default(),
                    query: query__.unwrap_or_default(),
                    start: start__.unwrap_or_default(),
                    end: end__.unwrap_or_default(),
                    max_tag_values: max_tag_values__.unwrap_or_default(),
                    stale_value_threshold: stale_value_threshold__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagValuesRequest", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagValuesResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.tag_values.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagValuesResponse", len)?;
        if !self.tag_values.is_empty() {
            struct_ser.serialize_field("tagValues", &self.tag_values)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagValuesResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "tagValues",
            "metrics",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TagValues,
            Metrics,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "tagValues" => Ok(GeneratedField::TagValues),
                            "metrics" => Ok(GeneratedField::Metrics),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagValuesResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagValuesResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagValuesResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut tag_values__ = None;
                let mut metrics__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TagValues => {
                            if tag_values__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tagValues"));
                            }
                            tag_values__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                    }
                }
                Ok(SearchTagValuesResponse {
                    tag_values: tag_values__.unwrap_or_default(),
                    metrics: metrics__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagValuesResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagValuesV2Response {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.tag_values.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagValuesV2Response", len)?;
        if !self.tag_values.is_empty() {
            struct_ser.serialize_field("tagValues", &self.tag_values)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagValuesV2Response {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "tagValues",
            "metrics",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TagValues,
            Metrics,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "tagValues" => Ok(GeneratedField::TagValues),
                            "metrics" => Ok(GeneratedField::Metrics),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagValuesV2Response;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagValuesV2Response")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagValuesV2Response, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut tag_values__ = None;
                let mut metrics__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TagValues => {
                            if tag_values__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tagValues"));
                            }
                            tag_values__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                    }
                }
                Ok(SearchTagValuesV2Response {
                    tag_values: tag_values__.unwrap_or_default(),
                    metrics: metrics__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagValuesV2Response", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagsRequest {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.scope.is_empty() {
            len += 1;
        }
        if !self.query.is_empty() {
            len += 1;
        }
        if self.start != 0 {
            len += 1;
        }
        if self.end != 0 {
            len += 1;
        }
        if self.max_tags_per_scope != 0 {
            len += 1;
        }
        if self.stale_values_threshold != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagsRequest", len)?;
        if !self.scope.is_empty() {
            struct_ser.serialize_field("scope", &self.scope)?;
        }
        if !self.query.is_empty() {
            struct_ser.serialize_field("query", &self.query)?;
        }
        if self.start != 0 {
            struct_ser.serialize_field("start", &self.start)?;
        }
        if self.end != 0 {
            struct_ser.serialize_field("end", &self.end)?;
        }
        if self.max_tags_per_scope != 0 {
            struct_ser.serialize_field("maxTagsPerScope", &self.max_tags_per_scope)?;
        }
        if self.stale_values_threshold != 0 {
            struct_ser.serialize_field("staleValuesThreshold", &self.stale_values_threshold)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagsRequest {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "scope",
            "query",
            "start",
            "end",
            "maxTagsPerScope",
            "staleValuesThreshold",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Scope,
            Query,
            Start,
            End,
            MaxTagsPerScope,
            StaleValuesThreshold,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "scope" => Ok(GeneratedField::Scope),
                            "query" => Ok(GeneratedField::Query),
                            "start" => Ok(GeneratedField::Start),
                            "end" => Ok(GeneratedField::End),
                            "maxTagsPerScope" => Ok(GeneratedField::MaxTagsPerScope),
                            "staleValuesThreshold" => Ok(GeneratedField::StaleValuesThreshold),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagsRequest;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagsRequest")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagsRequest, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut scope__ = None;
                let mut query__ = None;
                let mut start__ = None;
                let mut end__ = None;
                let mut max_tags_per_scope__ = None;
                let mut stale_values_threshold__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Scope => {
                            if scope__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scope"));
                            }
                            scope__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Query => {
                            if query__.is_some() {
                                return Err(serde::de::Error::duplicate_field("query"));
                            }
                            query__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Start => {
                            if start__.is_some() {
                                return Err(serde::de::Error::duplicate_field("start"));
                            }
                            start__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::End => {
                            if end__.is_some() {
                                return Err(serde::de::Error::duplicate_field("end"));
                            }
                            end__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::MaxTagsPerScope => {
                            if max_tags_per_scope__.is_some() {
                                return Err(serde::de::Error::duplicate_field("maxTagsPerScope"));
                            }
                            max_tags_per_scope__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::StaleValuesThreshold => {
                            if stale_values_threshold__.is_some() {
                                return Err(serde::de::Error::duplicate_field("staleValuesThreshold"));
                            }
                            stale_values_threshold__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(SearchTagsRequest {
                    scope: scope__.unwrap_or_default(),
                    query: query__.unwrap_or_default(),
                    start: start__.unwrap_or_default(),
                    end: end__.unwrap_or_default(),
                    max_tags_per_scope: max_tags_per_scope__.unwrap_or_default(),
                    stale_values_threshold: stale_values_threshold__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagsRequest", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagsResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.tag_names.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagsResponse", len)?;
        if !self.tag_names.is_empty() {
            struct_ser.serialize_field("tagNames", &self.tag_names)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagsResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "tagNames",
            "metrics",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TagNames,
            Metrics,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "tagNames" => Ok(GeneratedField::TagNames),
                            "metrics" => Ok(GeneratedField::Metrics),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagsResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagsResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagsResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut tag_names__ = None;
                let mut metrics__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TagNames => {
                            if tag_names__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tagNames"));
                            }
                            tag_names__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                    }
                }
                Ok(SearchTagsResponse {
                    tag_names: tag_names__.unwrap_or_default(),
                    metrics: metrics__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagsResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagsV2Response {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.scopes.is_empty() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagsV2Response", len)?;
        if !self.scopes.is_empty() {
            struct_ser.serialize_field("scopes", &self.scopes)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagsV2Response {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "scopes",
            "metrics",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Scopes,
            Metrics,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "scopes" => Ok(GeneratedField::Scopes),
                            "metrics" => Ok(GeneratedField::Metrics),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagsV2Response;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagsV2Response")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagsV2Response, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut scopes__ = None;
                let mut metrics__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Scopes => {
                            if scopes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("scopes"));
                            }
                            scopes__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                    }
                }
                Ok(SearchTagsV2Response {
                    scopes: scopes__.unwrap_or_default(),
                    metrics: metrics__,
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagsV2Response", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SearchTagsV2Scope {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.name.is_empty() {
            len += 1;
        }
        if !self.tags.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SearchTagsV2Scope", len)?;
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if !self.tags.is_empty() {
            struct_ser.serialize_field("tags", &self.tags)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SearchTagsV2Scope {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "name",
            "tags",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Name,
            Tags,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "name" => Ok(GeneratedField::Name),
                            "tags" => Ok(GeneratedField::Tags),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SearchTagsV2Scope;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SearchTagsV2Scope")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SearchTagsV2Scope, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut name__ = None;
                let mut tags__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Tags => {
                            if tags__.is_some() {
                                return Err(serde::de::Error::duplicate_field("tags"));
                            }
                            tags__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(SearchTagsV2Scope {
                    name: name__.unwrap_or_default(),
                    tags: tags__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SearchTagsV2Scope", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for ServiceStats {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.span_count != 0 {
            len += 1;
        }
        if self.error_count != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.ServiceStats", len)?;
        if self.span_count != 0 {
            struct_ser.serialize_field("spanCount", &self.span_count)?;
        }
        if self.error_count != 0 {
            struct_ser.serialize_field("errorCount", &self.error_count)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for ServiceStats {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "spanCount",
            "errorCount",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            SpanCount,
            ErrorCount,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "spanCount" => Ok(GeneratedField::SpanCount),
                            "errorCount" => Ok(GeneratedField::ErrorCount),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = ServiceStats;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.ServiceStats")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<ServiceStats, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut span_count__ = None;
                let mut error_count__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::SpanCount => {
                            if span_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("spanCount"));
                            }
                            span_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::ErrorCount => {
                            if error_count__.is_some() {
                                return Err(serde::de::Error::duplicate_field("errorCount"));
                            }
                            error_count__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(ServiceStats {
                    span_count: span_count__.unwrap_or_default(),
                    error_count: error_count__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.ServiceStats", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Span {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.span_id.is_empty() {
            len += 1;
        }
        if !self.name.is_empty() {
            len += 1;
        }
        if self.start_time_unix_nano != 0 {
            len += 1;
        }
        if self.duration_nanos != 0 {
            len += 1;
        }
        if !self.attributes.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.Span", len)?;
        if !self.span_id.is_empty() {
            struct_ser.serialize_field("spanID", &self.span_id)?;
        }
        if !self.name.is_empty() {
            struct_ser.serialize_field("name", &self.name)?;
        }
        if self.start_time_unix_nano != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("startTimeUnixNano", ToString::to_string(&self.start_time_unix_nano).as_str())?;
        }
        if self.duration_nanos != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("durationNanos", ToString::to_string(&self.duration_nanos).as_str())?;
        }
        if !self.attributes.is_empty() {
            struct_ser.serialize_field("attributes", &self.attributes)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Span {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "spanID",
            "name",
            "startTimeUnixNano",
            "durationNanos",
            "attributes",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            SpanId,
            Name,
            StartTimeUnixNano,
            DurationNanos,
            Attributes,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "spanID" => Ok(GeneratedField::SpanId),
                            "name" => Ok(GeneratedField::Name),
                            "startTimeUnixNano" => Ok(GeneratedField::StartTimeUnixNano),
                            "durationNanos" => Ok(GeneratedField::DurationNanos),
                            "attributes" => Ok(GeneratedField::Attributes),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Span;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.Span")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Span, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut span_id__ = None;
                let mut name__ = None;
                let mut start_time_unix_nano__ = None;
                let mut duration_nanos__ = None;
                let mut attributes__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::SpanId => {
                            if span_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("spanID"));
                            }
                            span_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Name => {
                            if name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("name"));
                            }
                            name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::StartTimeUnixNano => {
                            if start_time_unix_nano__.is_some() {
                                return Err(serde::de::Error::duplicate_field("startTimeUnixNano"));
                            }
                            start_time_unix_nano__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::DurationNanos => {
                            if duration_nanos__.is_some() {
                                return Err(serde::de::Error::duplicate_field("durationNanos"));
                            }
                            duration_nanos__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Attributes => {
                            if attributes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("attributes"));
                            }
                            attributes__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Span {
                    span_id: span_id__.unwrap_or_default(),
                    name: name__.unwrap_or_default(),
                    start_time_unix_nano: start_time_unix_nano__.unwrap_or_default(),
                    duration_nanos: duration_nanos__.unwrap_or_default(),
                    attributes: attributes__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.Span", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for SpanSet {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.spans.is_empty() {
            len += 1;
        }
        if self.matched != 0 {
            len += 1;
        }
        if !self.attributes.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.SpanSet", len)?;
        if !self.spans.is_empty() {
            struct_ser.serialize_field("spans", &self.spans)?;
        }
        if self.matched != 0 {
            struct_ser.serialize_field("matched", &self.matched)?;
        }
        if !self.attributes.is_empty() {
            struct_ser.serialize_field("attributes", &self.attributes)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for SpanSet {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "spans",
            "matched",
            "attributes",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Spans,
            Matched,
            Attributes,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "spans" => Ok(GeneratedField::Spans),
                            "matched" => Ok(GeneratedField::Matched),
                            "attributes" => Ok(GeneratedField::Attributes),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = SpanSet;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.SpanSet")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<SpanSet, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut spans__ = None;
                let mut matched__ = None;
                let mut attributes__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Spans => {
                            if spans__.is_some() {
                                return Err(serde::de::Error::duplicate_field("spans"));
                            }
                            spans__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Matched => {
                            if matched__.is_some() {
                                return Err(serde::de::Error::duplicate_field("matched"));
                            }
                            matched__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::Attributes => {
                            if attributes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("attributes"));
                            }
                            attributes__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(SpanSet {
                    spans: spans__.unwrap_or_default(),
                    matched: matched__.unwrap_or_default(),
                    attributes: attributes__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.SpanSet", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TagValue {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.r#type.is_empty() {
            len += 1;
        }
        if !self.value.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.TagValue", len)?;
        if !self.r#type.is_empty() {
            struct_ser.serialize_field("type", &self.r#type)?;
        }
        if !self.value.is_empty() {
            struct_ser.serialize_field("value", &self.value)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TagValue {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "type",
            "value",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Type,
            Value,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "type" => Ok(GeneratedField::Type),
                            "value" => Ok(GeneratedField::Value),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TagValue;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.TagValue")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TagValue, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut r#type__ = None;
                let mut value__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Type => {
                            if r#type__.is_some() {
                                return Err(serde::de::Error::duplicate_field("type"));
                            }
                            r#type__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Value => {
                            if value__.is_some() {
                                return Err(serde::de::Error::duplicate_field("value"));
                            }
                            value__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(TagValue {
                    r#type: r#type__.unwrap_or_default(),
                    value: value__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.TagValue", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TimeSeries {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.labels.is_empty() {
            len += 1;
        }
        if !self.samples.is_empty() {
            len += 1;
        }
        if !self.exemplars.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.TimeSeries", len)?;
        if !self.labels.is_empty() {
            struct_ser.serialize_field("labels", &self.labels)?;
        }
        if !self.samples.is_empty() {
            struct_ser.serialize_field("samples", &self.samples)?;
        }
        if !self.exemplars.is_empty() {
            struct_ser.serialize_field("exemplars", &self.exemplars)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TimeSeries {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "labels",
            "samples",
            "exemplars",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Labels,
            Samples,
            Exemplars,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "labels" => Ok(GeneratedField::Labels),
                            "samples" => Ok(GeneratedField::Samples),
                            "exemplars" => Ok(GeneratedField::Exemplars),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TimeSeries;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.TimeSeries")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TimeSeries, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut labels__ = None;
                let mut samples__ = None;
                let mut exemplars__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Labels => {
                            if labels__.is_some() {
                                return Err(serde::de::Error::duplicate_field("labels"));
                            }
                            labels__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Samples => {
                            if samples__.is_some() {
                                return Err(serde::de::Error::duplicate_field("samples"));
                            }
                            samples__ = Some(map_.next_value()?);
                        }
                        GeneratedField::Exemplars => {
                            if exemplars__.is_some() {
                                return Err(serde::de::Error::duplicate_field("exemplars"));
                            }
                            exemplars__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(TimeSeries {
                    labels: labels__.unwrap_or_default(),
                    samples: samples__.unwrap_or_default(),
                    exemplars: exemplars__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.TimeSeries", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for Trace {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.resource_spans.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.Trace", len)?;
        if !self.resource_spans.is_empty() {
            struct_ser.serialize_field("resourceSpans", &self.resource_spans)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for Trace {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "resourceSpans",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            ResourceSpans,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "resourceSpans" => Ok(GeneratedField::ResourceSpans),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = Trace;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.Trace")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<Trace, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut resource_spans__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::ResourceSpans => {
                            if resource_spans__.is_some() {
                                return Err(serde::de::Error::duplicate_field("resourceSpans"));
                            }
                            resource_spans__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(Trace {
                    resource_spans: resource_spans__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.Trace", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TraceByIdMetrics {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.inspected_bytes != 0 {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.TraceByIDMetrics", len)?;
        if self.inspected_bytes != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("inspectedBytes", ToString::to_string(&self.inspected_bytes).as_str())?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TraceByIdMetrics {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "inspectedBytes",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            InspectedBytes,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "inspectedBytes" => Ok(GeneratedField::InspectedBytes),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TraceByIdMetrics;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.TraceByIDMetrics")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TraceByIdMetrics, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut inspected_bytes__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::InspectedBytes => {
                            if inspected_bytes__.is_some() {
                                return Err(serde::de::Error::duplicate_field("inspectedBytes"));
                            }
                            inspected_bytes__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                    }
                }
                Ok(TraceByIdMetrics {
                    inspected_bytes: inspected_bytes__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.TraceByIDMetrics", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for TraceByIdResponse {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if self.trace.is_some() {
            len += 1;
        }
        if self.metrics.is_some() {
            len += 1;
        }
        if self.status != 0 {
            len += 1;
        }
        if !self.message.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.TraceByIDResponse", len)?;
        if let Some(v) = self.trace.as_ref() {
            struct_ser.serialize_field("trace", v)?;
        }
        if let Some(v) = self.metrics.as_ref() {
            struct_ser.serialize_field("metrics", v)?;
        }
        if self.status != 0 {
            let v = trace_by_id_response::Status::try_from(self.status)
                .map_err(|_| serde::ser::Error::custom(format!("Invalid variant {}", self.status)))?;
            struct_ser.serialize_field("status", &v)?;
        }
        if !self.message.is_empty() {
            struct_ser.serialize_field("message", &self.message)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TraceByIdResponse {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "trace",
            "metrics",
            "status",
            "message",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            Trace,
            Metrics,
            Status,
            Message,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "trace" => Ok(GeneratedField::Trace),
                            "metrics" => Ok(GeneratedField::Metrics),
                            "status" => Ok(GeneratedField::Status),
                            "message" => Ok(GeneratedField::Message),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TraceByIdResponse;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.TraceByIDResponse")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TraceByIdResponse, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut trace__ = None;
                let mut metrics__ = None;
                let mut status__ = None;
                let mut message__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::Trace => {
                            if trace__.is_some() {
                                return Err(serde::de::Error::duplicate_field("trace"));
                            }
                            trace__ = map_.next_value()?;
                        }
                        GeneratedField::Metrics => {
                            if metrics__.is_some() {
                                return Err(serde::de::Error::duplicate_field("metrics"));
                            }
                            metrics__ = map_.next_value()?;
                        }
                        GeneratedField::Status => {
                            if status__.is_some() {
                                return Err(serde::de::Error::duplicate_field("status"));
                            }
                            status__ = Some(map_.next_value::<trace_by_id_response::Status>()? as i32);
                        }
                        GeneratedField::Message => {
                            if message__.is_some() {
                                return Err(serde::de::Error::duplicate_field("message"));
                            }
                            message__ = Some(map_.next_value()?);
                        }
                    }
                }
                Ok(TraceByIdResponse {
                    trace: trace__,
                    metrics: metrics__,
                    status: status__.unwrap_or_default(),
                    message: message__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.TraceByIDResponse", FIELDS, GeneratedVisitor)
    }
}
impl serde::Serialize for trace_by_id_response::Status {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        let variant = match self {
            Self::Complete => "COMPLETE",
            Self::Partial => "PARTIAL",
        };
        serializer.serialize_str(variant)
    }
}
impl<'de> serde::Deserialize<'de> for trace_by_id_response::Status {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "COMPLETE",
            "PARTIAL",
        ];

        struct GeneratedVisitor;

        impl serde::de::Visitor<'_> for GeneratedVisitor {
            type Value = trace_by_id_response::Status;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(formatter, "expected one of: {:?}", &FIELDS)
            }

            fn visit_i64<E>(self, v: i64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Signed(v), &self)
                    })
            }

            fn visit_u64<E>(self, v: u64) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                i32::try_from(v)
                    .ok()
                    .and_then(|x| x.try_into().ok())
                    .ok_or_else(|| {
                        serde::de::Error::invalid_value(serde::de::Unexpected::Unsigned(v), &self)
                    })
            }

            fn visit_str<E>(self, value: &str) -> std::result::Result<Self::Value, E>
            where
                E: serde::de::Error,
            {
                match value {
                    "COMPLETE" => Ok(trace_by_id_response::Status::Complete),
                    "PARTIAL" => Ok(trace_by_id_response::Status::Partial),
                    _ => Err(serde::de::Error::unknown_variant(value, FIELDS)),
                }
            }
        }
        deserializer.deserialize_any(GeneratedVisitor)
    }
}
impl serde::Serialize for TraceSearchMetadata {
    #[allow(deprecated)]
    fn serialize<S>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error>
    where
        S: serde::Serializer,
    {
        use serde::ser::SerializeStruct;
        let mut len = 0;
        if !self.trace_id.is_empty() {
            len += 1;
        }
        if !self.root_service_name.is_empty() {
            len += 1;
        }
        if !self.root_trace_name.is_empty() {
            len += 1;
        }
        if self.start_time_unix_nano != 0 {
            len += 1;
        }
        if self.duration_ms != 0 {
            len += 1;
        }
        if self.span_set.is_some() {
            len += 1;
        }
        if !self.span_sets.is_empty() {
            len += 1;
        }
        if !self.service_stats.is_empty() {
            len += 1;
        }
        let mut struct_ser = serializer.serialize_struct("tempopb.TraceSearchMetadata", len)?;
        if !self.trace_id.is_empty() {
            struct_ser.serialize_field("traceID", &self.trace_id)?;
        }
        if !self.root_service_name.is_empty() {
            struct_ser.serialize_field("rootServiceName", &self.root_service_name)?;
        }
        if !self.root_trace_name.is_empty() {
            struct_ser.serialize_field("rootTraceName", &self.root_trace_name)?;
        }
        if self.start_time_unix_nano != 0 {
            #[allow(clippy::needless_borrow)]
            #[allow(clippy::needless_borrows_for_generic_args)]
            struct_ser.serialize_field("startTimeUnixNano", ToString::to_string(&self.start_time_unix_nano).as_str())?;
        }
        if self.duration_ms != 0 {
            struct_ser.serialize_field("durationMs", &self.duration_ms)?;
        }
        if let Some(v) = self.span_set.as_ref() {
            struct_ser.serialize_field("spanSet", v)?;
        }
        if !self.span_sets.is_empty() {
            struct_ser.serialize_field("spanSets", &self.span_sets)?;
        }
        if !self.service_stats.is_empty() {
            struct_ser.serialize_field("serviceStats", &self.service_stats)?;
        }
        struct_ser.end()
    }
}
impl<'de> serde::Deserialize<'de> for TraceSearchMetadata {
    #[allow(deprecated)]
    fn deserialize<D>(deserializer: D) -> std::result::Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        const FIELDS: &[&str] = &[
            "traceID",
            "rootServiceName",
            "rootTraceName",
            "startTimeUnixNano",
            "durationMs",
            "spanSet",
            "spanSets",
            "serviceStats",
        ];

        #[allow(clippy::enum_variant_names)]
        enum GeneratedField {
            TraceId,
            RootServiceName,
            RootTraceName,
            StartTimeUnixNano,
            DurationMs,
            SpanSet,
            SpanSets,
            ServiceStats,
        }
        impl<'de> serde::Deserialize<'de> for GeneratedField {
            fn deserialize<D>(deserializer: D) -> std::result::Result<GeneratedField, D::Error>
            where
                D: serde::Deserializer<'de>,
            {
                struct GeneratedVisitor;

                impl serde::de::Visitor<'_> for GeneratedVisitor {
                    type Value = GeneratedField;

                    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(formatter, "expected one of: {:?}", &FIELDS)
                    }

                    #[allow(unused_variables)]
                    fn visit_str<E>(self, value: &str) -> std::result::Result<GeneratedField, E>
                    where
                        E: serde::de::Error,
                    {
                        match value {
                            "traceID" => Ok(GeneratedField::TraceId),
                            "rootServiceName" => Ok(GeneratedField::RootServiceName),
                            "rootTraceName" => Ok(GeneratedField::RootTraceName),
                            "startTimeUnixNano" => Ok(GeneratedField::StartTimeUnixNano),
                            "durationMs" => Ok(GeneratedField::DurationMs),
                            "spanSet" => Ok(GeneratedField::SpanSet),
                            "spanSets" => Ok(GeneratedField::SpanSets),
                            "serviceStats" => Ok(GeneratedField::ServiceStats),
                            _ => Err(serde::de::Error::unknown_field(value, FIELDS)),
                        }
                    }
                }
                deserializer.deserialize_identifier(GeneratedVisitor)
            }
        }
        struct GeneratedVisitor;
        impl<'de> serde::de::Visitor<'de> for GeneratedVisitor {
            type Value = TraceSearchMetadata;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("struct tempopb.TraceSearchMetadata")
            }

            fn visit_map<V>(self, mut map_: V) -> std::result::Result<TraceSearchMetadata, V::Error>
                where
                    V: serde::de::MapAccess<'de>,
            {
                let mut trace_id__ = None;
                let mut root_service_name__ = None;
                let mut root_trace_name__ = None;
                let mut start_time_unix_nano__ = None;
                let mut duration_ms__ = None;
                let mut span_set__ = None;
                let mut span_sets__ = None;
                let mut service_stats__ = None;
                while let Some(k) = map_.next_key()? {
                    match k {
                        GeneratedField::TraceId => {
                            if trace_id__.is_some() {
                                return Err(serde::de::Error::duplicate_field("traceID"));
                            }
                            trace_id__ = Some(map_.next_value()?);
                        }
                        GeneratedField::RootServiceName => {
                            if root_service_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("rootServiceName"));
                            }
                            root_service_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::RootTraceName => {
                            if root_trace_name__.is_some() {
                                return Err(serde::de::Error::duplicate_field("rootTraceName"));
                            }
                            root_trace_name__ = Some(map_.next_value()?);
                        }
                        GeneratedField::StartTimeUnixNano => {
                            if start_time_unix_nano__.is_some() {
                                return Err(serde::de::Error::duplicate_field("startTimeUnixNano"));
                            }
                            start_time_unix_nano__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::DurationMs => {
                            if duration_ms__.is_some() {
                                return Err(serde::de::Error::duplicate_field("durationMs"));
                            }
                            duration_ms__ = 
                                Some(map_.next_value::<::pbjson::private::NumberDeserialize<_>>()?.0)
                            ;
                        }
                        GeneratedField::SpanSet => {
                            if span_set__.is_some() {
                                return Err(serde::de::Error::duplicate_field("spanSet"));
                            }
                            span_set__ = map_.next_value()?;
                        }
                        GeneratedField::SpanSets => {
                            if span_sets__.is_some() {
                                return Err(serde::de::Error::duplicate_field("spanSets"));
                            }
                            span_sets__ = Some(map_.next_value()?);
                        }
                        GeneratedField::ServiceStats => {
                            if service_stats__.is_some() {
                                return Err(serde::de::Error::duplicate_field("serviceStats"));
                            }
                            service_stats__ = Some(
                                map_.next_value::<std::collections::HashMap<_, _>>()?
                            );
                        }
                    }
                }
                Ok(TraceSearchMetadata {
                    trace_id: trace_id__.unwrap_or_default(),
                    root_service_name: root_service_name__.unwrap_or_default(),
                    root_trace_name: root_trace_name__.unwrap_or_default(),
                    start_time_unix_nano: start_time_unix_nano__.unwrap_or_default(),
                    duration_ms: duration_ms__.unwrap_or_default(),
                    span_set: span_set__,
                    span_sets: span_sets__.unwrap_or_default(),
                    service_stats: service_stats__.unwrap_or_default(),
                })
            }
        }
        deserializer.deserialize_struct("tempopb.TraceSearchMetadata", FIELDS, GeneratedVisitor)
    }
}
