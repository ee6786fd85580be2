//! Cron expressions with crontab's meaning, shared by the scheduler (which runs them) and the
//! API (which validates them on input).
//!
//! Five fields (`minute hour day-of-month month day-of-week`) read as in crontab(5): day-of-week
//! numbers run 0–7 with Sunday as 0 or 7. The `cron` crate counts Sunday as 1, so numeric
//! weekdays are turned into names before parsing (`1-5` is Monday to Friday, as a user expects).
//! Six or seven fields (seconds first, optional year) go to the crate as they are.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, thiserror::Error)]
#[error("`{expression}` is not a cron expression: {reason}")]
pub struct CronError {
    pub expression: String,
    pub reason: String,
}

const WEEKDAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];

/// crontab weekday numbers (0–7) as names; names and `*` stay.
fn weekdays_as_names(field: &str) -> Result<String, String> {
    let name = |day: &str| -> Result<String, String> {
        match day.parse::<usize>() {
            Ok(n) => WEEKDAYS
                .get(n)
                .map(|d| (*d).to_owned())
                .ok_or_else(|| format!("day of week {n} is not 0 to 7")),
            Err(_) => Ok(day.to_owned()),
        }
    };
    field
        .split(',')
        .map(|item| {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            let range = match range.split_once('-') {
                Some((from, to)) => format!("{}-{}", name(from)?, name(to)?),
                None => name(range)?,
            };
            Ok(match step {
                Some(step) => format!("{range}/{step}"),
                None => range,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(|items| items.join(","))
}

/// Parses a 5-field (crontab, minute precision) or 6/7-field (with seconds) expression.
///
/// # Errors
/// When the expression does not parse.
pub fn parse(expression: &str) -> Result<cron::Schedule, CronError> {
    let error = |reason: String| CronError {
        expression: expression.to_owned(),
        reason,
    };
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let full = if let [minute, hour, day, month, weekday] = fields[..] {
        let weekday = weekdays_as_names(weekday).map_err(error)?;
        format!("0 {minute} {hour} {day} {month} {weekday}")
    } else {
        expression.to_owned()
    };
    cron::Schedule::from_str(&full).map_err(|e| error(e.to_string()))
}

/// The first tick of `schedule` strictly after `after`, read in `tz`, in UTC.
pub fn next_tick(schedule: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&after.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike as _, Timelike as _, Weekday};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn crontab_weekdays_count_sunday_as_zero_or_seven() {
        // 2026-11-28 is a Saturday.
        let sat = at("2026-11-28T12:00:00Z");
        let weekdays = parse("0 9 * * 1-5").unwrap();
        let next = next_tick(&weekdays, Tz::UTC, sat).unwrap();
        assert_eq!((next.weekday(), next.hour()), (Weekday::Mon, 9));
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            let next = next_tick(&parse(sunday).unwrap(), Tz::UTC, sat).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{sunday}");
        }
        let odd = parse("0 9 * * 1-5/2,6").unwrap();
        let days: Vec<Weekday> = odd.after(&sat).take(4).map(|t| t.weekday()).collect();
        assert_eq!(
            days,
            [Weekday::Mon, Weekday::Wed, Weekday::Fri, Weekday::Sat]
        );
        assert!(parse("0 9 * * 8").is_err());
        assert!(parse("every day").is_err());
        assert!(parse("61 * * * *").is_err());
    }

    #[test]
    fn ticks_are_read_in_the_time_zone() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let next = next_tick(
            &parse("0 9 * * *").unwrap(),
            paris,
            at("2026-11-26T10:00:00Z"),
        )
        .unwrap();
        assert_eq!(next, at("2026-11-27T08:00:00Z"));
        let summer = next_tick(
            &parse("0 9 * * *").unwrap(),
            paris,
            at("2026-07-01T10:00:00Z"),
        )
        .unwrap();
        assert_eq!(summer, at("2026-07-02T07:00:00Z"));
    }
}
