//! The built-in team coordinator: assignees of open tasks due within a day are reminded once per
//! due time, inside their working hours in their own time zone (a member outside them is
//! reminded by a later tick, while the task is still due within the day). Each batch is one
//! `email` step: the `reminders_sent` rows, the emails and a `team_reminder` activity entry
//! commit with its result. The emails are the reminder template (no LLM).

use chrono::{DateTime, Datelike as _, NaiveTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    agents::ActivityAction,
    db::{
        agent_runs::Run,
        memberships::Contact,
        reminders::{self, DueTask, ReminderKind, WorkingTime},
    },
};
use zoark_jobs::email::SystemTemplate;

use super::{End, notify::EffectStep, resume_position};
use crate::{WorkerContext, engine::JobError};

/// Candidates read per run (the next tick takes the rest).
const CANDIDATES: i64 = 2_000;
/// Reminders per `email` step.
const BATCH: usize = 50;

/// Working hours of a member who set none.
const DEFAULT_HOURS: (u32, u32) = (9, 17);

/// Whether `now` falls within the member's working hours on one of their working days, in their
/// zone (09:00–17:00 when they set no hours). An unknown zone is never within hours.
pub fn within_working_hours(now: DateTime<Utc>, working: &WorkingTime) -> bool {
    let Ok(tz) = working.time_zone.parse::<Tz>() else {
        return false;
    };
    let local = now.with_timezone(&tz);
    let today = i16::try_from(local.weekday().number_from_monday()).unwrap_or(0);
    let hour = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap_or(NaiveTime::MIN);
    let starts = working
        .work_starts_at
        .unwrap_or_else(|| hour(DEFAULT_HOURS.0));
    let ends = working
        .work_ends_at
        .unwrap_or_else(|| hour(DEFAULT_HOURS.1));
    working.working_days.contains(&today) && starts <= local.time() && local.time() < ends
}

/// The reminders due now: candidates within their working hours.
async fn due_now(
    conn: &mut PgConnection,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<DueTask>> {
    let mut due = reminders::due_tasks(conn, organization_id, now, CANDIDATES).await?;
    due.retain(|d| within_working_hours(now, &d.working));
    Ok(due)
}

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    Ok(!due_now(conn, organization_id, Utc::now()).await?.is_empty())
}

/// Runs the team coordinator.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<End, JobError> {
    let mut position = resume_position(ctx, run).await?;
    let mut conn = ctx.pool.acquire().await?;
    let due = due_now(&mut conn, run.organization_id, Utc::now()).await?;
    drop(conn);
    let mut sent = 0;
    for batch in due.chunks(BATCH) {
        position += 1;
        sent += remind(ctx, run, position, batch).await?;
    }
    Ok(End::Succeeded(json!({
        "task_due_reminders": sent,
        "note": "reminders use the reminder template; this agent asks no LLM",
    })))
}

async fn remind(
    ctx: &WorkerContext,
    run: &Run,
    position: i32,
    batch: &[DueTask],
) -> Result<usize, JobError> {
    let org = run.organization_id;
    let request: Vec<_> = batch
        .iter()
        .map(|d| json!({"task_id": d.task_id, "team_member_id": d.member_id}))
        .collect();
    let mut step = EffectStep::email(ctx, run, position, &json!({"reminders": request})).await?;
    for d in batch {
        let recorded = reminders::record(
            step.conn(),
            org,
            ReminderKind::TaskDue,
            d.task_id,
            d.member_id,
            &d.period,
        )
        .await?;
        if !recorded {
            continue;
        }
        let mut url = ctx.settings.http.public_url.clone();
        url.set_path(&format!("/tasks/{}", d.task_id));
        let params = json!({
            "recipient_name": d.member_name,
            "title": format!("{} is due soon", d.title),
            "body": format!(
                "The task \"{}\" of the project {} is due on {}.",
                d.title,
                d.project_name,
                d.due_at.format("%Y-%m-%d at %H:%M UTC"),
            ),
            "due_at": d.due_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            "url": url.as_str(),
        });
        let to = Contact {
            name: d.member_name.clone(),
            email: d.email.clone(),
        };
        step.send(&to, SystemTemplate::Reminder, &params).await?;
    }
    let sent = step.sent();
    if sent > 0 {
        let summary = format!("{sent} due-task reminder(s) sent");
        step.activity(
            ActivityAction::TeamReminder,
            &summary,
            &json!({"reminders": sent}),
        )
        .await?;
    }
    step.finish(json!({"sent": sent})).await?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn working(zone: &str, days: &[i16], hours: Option<(u32, u32)>) -> WorkingTime {
        let t = |h| NaiveTime::from_hms_opt(h, 0, 0);
        WorkingTime {
            time_zone: zone.into(),
            working_days: days.to_vec(),
            work_starts_at: hours.and_then(|(s, _)| t(s)),
            work_ends_at: hours.and_then(|(_, e)| t(e)),
        }
    }

    #[test]
    fn working_hours_are_the_members_own_in_their_zone() {
        let weekdays = [1, 2, 3, 4, 5];
        // Friday 2026-11-27 08:30 UTC: 09:30 in Paris, 17:30 in Tokyo.
        let now = at("2026-11-27T08:30:00Z");
        assert!(within_working_hours(
            now,
            &working("Europe/Paris", &weekdays, None)
        ));
        assert!(!within_working_hours(
            now,
            &working("Asia/Tokyo", &weekdays, None)
        ));
        assert!(within_working_hours(
            now,
            &working("Asia/Tokyo", &weekdays, Some((10, 18)))
        ));
        // Not a working day there.
        assert!(!within_working_hours(
            now,
            &working("Europe/Paris", &[1, 2, 3, 4], None)
        ));
        // 21:30 in Auckland: after a day that ends at 21:00.
        assert!(!within_working_hours(
            now,
            &working("Pacific/Auckland", &weekdays, Some((9, 21)))
        ));
        assert!(within_working_hours(
            now,
            &working("Pacific/Auckland", &weekdays, Some((9, 22)))
        ));
        // The end is exclusive; an unknown zone is never within hours.
        assert!(!within_working_hours(
            at("2026-11-27T17:00:00Z"),
            &working("UTC", &weekdays, None)
        ));
        assert!(!within_working_hours(
            now,
            &working("Mars/Olympus", &weekdays, None)
        ));
    }
}
