//! Query parameter types shared by list endpoints.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, Utc};
use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromParameter, ParseResult, Type},
};

/// An RFC 3339 instant Postgres can store (4713 BC to 294276 AD). chrono reads years down to
/// -262143, which Postgres refuses with an error; such a filter is a 400 naming the parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

/// The earliest year of Postgres' `timestamptz` (4713 BC is year -4712 in ISO 8601).
const EARLIEST_YEAR: i32 = -4712;

impl Timestamp {
    /// # Errors
    /// When `at` is before 4713 BC.
    pub fn new(at: DateTime<Utc>) -> Result<Self, &'static str> {
        if at.year() < EARLIEST_YEAR {
            return Err("must be between 4713 BC and 294276 AD");
        }
        Ok(Self(at))
    }
}

impl Type for Timestamp {
    const IS_REQUIRED: bool = true;
    type RawValueType = DateTime<Utc>;
    type RawElementValueType = DateTime<Utc>;

    fn name() -> Cow<'static, str> {
        <DateTime<Utc> as Type>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        <DateTime<Utc> as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <DateTime<Utc> as Type>::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for Timestamp {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let at = <DateTime<Utc> as ParseFromParameter>::parse_from_parameter(value)
            .map_err(ParseError::propagate)?;
        Self::new(at).map_err(ParseError::custom)
    }
}

/// The instant of an optional [`Timestamp`] parameter.
pub fn instant(param: Option<Timestamp>) -> Option<DateTime<Utc>> {
    param.map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ParseFromParameter;

    use super::Timestamp;

    #[test]
    fn instants_postgres_cannot_store_are_refused() {
        assert!(Timestamp::parse_from_parameter("2026-11-26T09:00:00Z").is_ok());
        assert!(Timestamp::parse_from_parameter("-4712-01-01T00:00:00Z").is_ok());
        let refused = Timestamp::parse_from_parameter("-262143-01-01T00:00:00Z").unwrap_err();
        assert!(
            refused.message().contains("4713 BC"),
            "{}",
            refused.message()
        );
        assert!(Timestamp::parse_from_parameter("yesterday").is_err());
    }
}
