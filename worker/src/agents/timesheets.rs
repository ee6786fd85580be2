//! The built-in timesheet reminder: each team member, at the close of their working week in
//! their own zone (their last working day, from an hour before their day ends; 16:00 without
//! hours), is asked once per ISO week to complete their timesheet, with the hours they logged
//! and a draft of their week (work logged per task and day, tasks finished) for them to review.
//! The LLM writes the draft; without one it is a deterministic list (the run's output says
//! which). Nothing is ever submitted on the member's behalf.
//!
//! Each member is two steps: the draft (an `llm_call` whose request carries
//! `metadata.team_member_id`, reused when a resumed run finds it) and the reminder (an `email`
//! step whose `reminders_sent` row, email and `timesheet_reminder` activity entry commit with
//! its result).

use chrono::{DateTime, Datelike as _, Duration, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    agents::ActivityAction,
    db::{
        agent_runs::{self, Run},
        agents::Agent,
        memberships::Contact,
        reminders::{self, Member, ReminderKind, Week},
    },
};
use zoark_jobs::email::SystemTemplate;

use super::{End, Llm, Resumed, llm_answer, notify::EffectStep, stored_answer};
use crate::{WorkerContext, engine::JobError};

/// Members read per page.
const PAGE: i64 = 500;
/// Members reminded per run at most (the next tick takes the rest).
const MAX_REMINDERS: usize = 200;

/// When a member's week of work ends, in their zone: their last working day, an hour before
/// their day ends (16:00 without working hours). `None` when today is not that day or it is
/// earlier than that; else the ISO week and its Monday's start.
pub fn week_closes(
    now: DateTime<Utc>,
    tz: Tz,
    working_days: &[i16],
    ends_at: Option<NaiveTime>,
) -> Option<(String, DateTime<Utc>)> {
    let local = now.with_timezone(&tz);
    let last_day = working_days.iter().copied().max()?;
    let today = i16::try_from(local.weekday().number_from_monday()).ok()?;
    let threshold = ends_at
        .map(|end| end.overflowing_sub_signed(Duration::hours(1)))
        .map(|(t, wrapped)| if wrapped == 0 { t } else { NaiveTime::MIN })
        .unwrap_or_else(|| NaiveTime::from_hms_opt(16, 0, 0).unwrap_or(NaiveTime::MIN));
    if today != last_day || local.time() < threshold {
        return None;
    }
    let monday =
        local.date_naive() - chrono::Days::new(u64::from(local.weekday().num_days_from_monday()));
    let week_start = tz
        .from_local_datetime(&monday.and_time(NaiveTime::MIN))
        .earliest()?
        .with_timezone(&Utc);
    let iso = local.iso_week();
    Some((format!("{}-W{:02}", iso.year(), iso.week()), week_start))
}

/// Hours as emails show them: `37.5`, `40`.
fn hours(minutes: i64) -> String {
    let h = minutes as f64 / 60.0;
    let s = format!("{h:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// A member whose week closes now and who was not reminded of it yet.
struct Due {
    member: Member,
    tz: Tz,
    week: String,
    week_start: DateTime<Utc>,
}

/// The members due a reminder now.
async fn due_now(
    conn: &mut PgConnection,
    organization_id: Uuid,
    now: DateTime<Utc>,
    max: usize,
) -> sqlx::Result<Vec<Due>> {
    // A week's reminder is sent during that week: the last eight days hold every one that counts.
    let kind = ReminderKind::Timesheet;
    let sent = reminders::sent_since(conn, organization_id, kind, now - Duration::days(8)).await?;
    let mut due = Vec::new();
    let mut after = Uuid::nil();
    loop {
        let page = reminders::members(conn, organization_id, after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(due);
        };
        after = last.id;
        let full = i64::try_from(page.len()).unwrap_or(0) == PAGE;
        for member in page {
            let Ok(tz) = member.working.time_zone.parse::<Tz>() else {
                continue;
            };
            let closes = week_closes(
                now,
                tz,
                &member.working.working_days,
                member.working.work_ends_at,
            );
            let Some((week, week_start)) = closes else {
                continue;
            };
            if sent.contains(&(member.id, week.clone())) {
                continue;
            }
            due.push(Due {
                member,
                tz,
                week,
                week_start,
            });
            if due.len() >= max {
                return Ok(due);
            }
        }
        if !full {
            return Ok(due);
        }
    }
}

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    Ok(!due_now(conn, organization_id, Utc::now(), 1)
        .await?
        .is_empty())
}

/// Runs the timesheet reminder.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let now = Utc::now();
    let mut conn = ctx.pool.acquire().await?;
    let Resumed {
        llm,
        steps,
        mut position,
    } = Resumed::load(ctx, &mut conn, run, def).await?;
    let due = due_now(&mut conn, run.organization_id, now, MAX_REMINDERS).await?;
    drop(conn);
    let mut reminded = Vec::new();
    for d in &due {
        let mut conn = ctx.pool.acquire().await?;
        if agent_runs::cancel_requested(&mut conn, run.id).await? {
            return Ok(End::Cancelled);
        }
        let week = reminders::week(
            &mut conn,
            run.organization_id,
            d.member.id,
            d.member.user_id,
            d.week_start,
        )
        .await?;
        drop(conn);
        let draft = match &llm {
            None => template(&week),
            Some(llm) => {
                let key = format!("{}:{}", d.member.id, d.week);
                match stored_answer(&steps, "team_member_week", &key).and_then(content) {
                    Some(draft) => draft,
                    None => {
                        position += 1;
                        match ask(ctx, run, def, llm, position, &key, &week).await? {
                            Ok(draft) => draft,
                            Err(end) => return Ok(end),
                        }
                    }
                }
            }
        };
        position += 1;
        if remind(ctx, run, position, d, &week, &draft).await? {
            reminded.push(d.member.id);
        }
    }
    Ok(End::Succeeded(json!({
        "reminded_members": reminded,
        "drafts": if llm.is_some() { "llm" } else { "template" },
        "note": if llm.is_some() { Value::Null } else {
            json!("no LLM provider: drafts are a deterministic list of the week's work")
        },
    })))
}

fn content(message: &Value) -> Option<String> {
    message
        .get("content")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

/// The draft without an LLM: the work logged, line by line, and the tasks finished.
fn template(week: &Week) -> String {
    let mut lines = Vec::new();
    for w in week.work.as_array().into_iter().flatten() {
        let minutes = w.get("minutes").and_then(Value::as_i64).unwrap_or(0);
        let mut line = format!(
            "{}: {} h on {}",
            w.get("day").and_then(Value::as_str).unwrap_or_default(),
            hours(minutes),
            w.get("task").and_then(Value::as_str).unwrap_or_default()
        );
        if let Some(note) = w.get("note").and_then(Value::as_str) {
            line.push_str(&format!(" ({note})"));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push("No work logged this week.".to_owned());
    }
    for f in week.finished.as_array().into_iter().flatten() {
        lines.push(format!(
            "Finished {}: {}",
            f.get("completed_on")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            f.get("task").and_then(Value::as_str).unwrap_or_default()
        ));
    }
    lines.join("\n")
}

/// Asks the LLM for the draft; `Err(end)` when the run must end.
async fn ask(
    ctx: &WorkerContext,
    run: &Run,
    def: &Agent,
    llm: &Llm,
    position: i32,
    key: &str,
    week: &Week,
) -> Result<Result<String, End>, JobError> {
    let facts = json!({"minutes_logged": week.minutes, "work_logged": week.work,
                       "tasks_finished": week.finished});
    let request = json!({
        "model": llm.model,
        "metadata": {"team_member_week": key},
        "messages": [
            {"role": "system", "content": "You help a team member fill in their weekly \
              timesheet. From the work they logged and the tasks they finished, draft a short \
              summary of their week, one line per day or task, for them to review. Invent \
              nothing: use only the facts given."},
            {"role": "user", "content": facts.to_string()},
        ],
    });
    Ok(llm_answer(ctx, run, def, llm, position, request)
        .await?
        .and_then(|message| {
            content(&message).ok_or_else(|| End::Failed("the LLM's draft is empty".into()))
        }))
}

/// The reminder as one step; `false` when it was recorded meanwhile (nothing is sent).
async fn remind(
    ctx: &WorkerContext,
    run: &Run,
    position: i32,
    d: &Due,
    week: &Week,
    draft: &str,
) -> Result<bool, JobError> {
    let m = &d.member;
    let request = json!({"team_member_id": m.id, "week": d.week, "to": m.email});
    let mut step = EffectStep::email(ctx, run, position, &request).await?;
    let kind = ReminderKind::Timesheet;
    if !reminders::record(step.conn(), run.organization_id, kind, m.id, m.id, &d.week).await? {
        // Dropped: the step rolls back.
        return Ok(false);
    }
    let day_minutes = match (m.working.work_starts_at, m.working.work_ends_at) {
        (Some(start), Some(end)) => (end - start).num_minutes(),
        _ => 8 * 60,
    };
    let expected = day_minutes * i64::try_from(m.working.working_days.len()).unwrap_or(5);
    let mut url = ctx.settings.http.public_url.clone();
    url.set_path("/timesheets");
    let params = json!({
        "recipient_name": m.name,
        "period": format!("the week of {}", d.week_start.with_timezone(&d.tz).format("%Y-%m-%d")),
        "hours_logged": hours(week.minutes),
        "hours_expected": hours(expected),
        "timesheet_url": url.as_str(),
        "draft": draft,
    });
    let to = Contact {
        name: m.name.clone(),
        email: m.email.clone(),
    };
    step.send(&to, SystemTemplate::TimesheetReminder, &params)
        .await?;
    let summary = format!(
        "{} asked for the timesheet of {} ({} h logged)",
        m.name,
        d.week,
        hours(week.minutes)
    );
    let context = json!({"team_member_id": m.id, "week": d.week});
    step.activity(ActivityAction::TimesheetReminder, &summary, &context)
        .await?;
    step.finish(json!({"week": d.week, "draft": draft})).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_week_closes_on_the_last_working_day_from_an_hour_before_it_ends() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let weekdays = [1, 2, 3, 4, 5];
        // Friday 2026-11-27, 15:30 in Paris (14:30 UTC): not yet (16:00 without hours).
        assert_eq!(
            week_closes(at("2026-11-27T14:30:00Z"), paris, &weekdays, None),
            None
        );
        let (week, start) =
            week_closes(at("2026-11-27T15:30:00Z"), paris, &weekdays, None).unwrap();
        assert_eq!(week, "2026-W48");
        assert_eq!(start, at("2026-11-22T23:00:00Z"), "Monday 00:00 in Paris");
        // Ends at 17:30: from 16:30.
        let end = NaiveTime::from_hms_opt(17, 30, 0);
        assert_eq!(
            week_closes(at("2026-11-27T15:20:00Z"), paris, &weekdays, end),
            None
        );
        assert!(week_closes(at("2026-11-27T15:40:00Z"), paris, &weekdays, end).is_some());
        // Thursday is not the last working day; a Monday-to-Thursday week closes on it.
        assert_eq!(
            week_closes(at("2026-11-26T16:00:00Z"), paris, &weekdays, None),
            None
        );
        assert!(week_closes(at("2026-11-26T16:00:00Z"), paris, &[1, 2, 3, 4], None).is_some());
        assert_eq!(
            week_closes(at("2026-11-26T16:00:00Z"), paris, &[], None),
            None
        );
    }

    #[test]
    fn hours_read_naturally() {
        assert_eq!(hours(90), "1.5");
        assert_eq!(hours(2400), "40");
        assert_eq!(hours(0), "0");
    }

    #[test]
    fn the_template_lists_the_work_and_the_finished_tasks() {
        let week = Week {
            minutes: 150,
            work: json!([{"task": "Inspect rivets", "day": "2026-11-24", "minutes": 90, "note": null},
                         {"task": "Paint", "day": "2026-11-25", "minutes": 60, "note": "first coat"}]),
            finished: json!([{"task": "Survey", "completed_on": "2026-11-26"}]),
        };
        assert_eq!(
            template(&week),
            "2026-11-24: 1.5 h on Inspect rivets\n2026-11-25: 1 h on Paint (first coat)\n\
             Finished 2026-11-26: Survey"
        );
        let empty = Week {
            minutes: 0,
            work: json!([]),
            finished: json!([]),
        };
        assert_eq!(template(&empty), "No work logged this week.");
    }
}
