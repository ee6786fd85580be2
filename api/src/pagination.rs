//! Keyset pagination shared by list endpoints: `?limit=` (1 to 200, default 50) and `?cursor=`
//! (the id of the last item of the previous page; ids are UUIDv7, so newest first is id order).

use uuid::Uuid;

use crate::error::{ApiError, FieldError};

/// A validated page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub before_id: Option<Uuid>,
}

impl PageRequest {
    /// # Errors
    /// 400 naming `limit` or `cursor`.
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::InvalidParameter(FieldError {
                field: "limit".into(),
                message: "must be between 1 and 200".into(),
            }));
        }
        let before_id = cursor
            .map(|c| {
                c.parse::<Uuid>().map_err(|_| {
                    ApiError::InvalidParameter(FieldError {
                        field: "cursor".into(),
                        message: "not a cursor returned by this endpoint".into(),
                    })
                })
            })
            .transpose()?;
        Ok(Self { limit, before_id })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts `rows` (fetched with [`Self::fetch`]) to the page; returns it and the next cursor.
    pub fn page<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> Uuid) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(50);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|r| id(r).to_string())
        } else {
            None
        };
        (rows, next)
    }
}
