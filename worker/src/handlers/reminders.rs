//! `reminders.send`: the hourly reminder pass. Each reminder is recorded in `reminders_sent`
//! in the same transaction that enqueues its email, so a rerun — or a pass that runs late
//! after downtime — never sends one twice.

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Duration, NaiveTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use zoark_core::{Settings, settings::EncryptionKey};
use zoark_jobs::{
    Opts,
    email::{SystemTemplate, enqueue_system},
    reminders::SendReminders,
};

use crate::{
    WorkerContext,
    engine::{JobContext, Registry},
};

/// Reminders enqueued per transaction.
const BATCH: i64 = 200;

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let ctx = ctx.clone();
    registry.register(move |_: SendReminders, _: JobContext| {
        let ctx = ctx.clone();
        async move {
            let sent = send_reminders(&ctx.pool, &ctx.settings, Utc::now()).await?;
            tracing::info!(
                reminders.task_due = sent.task_due,
                reminders.timesheet = sent.timesheet,
                "reminder pass"
            );
            Ok(())
        }
    })
}

/// How many reminders a pass sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub task_due: usize,
    pub timesheet: usize,
}

/// One pass at `now` over every organization.
///
/// # Errors
/// Database or enqueue errors (the batch's transaction is rolled back; the next run retries).
pub async fn send_reminders(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Sent> {
    Ok(Sent {
        task_due: task_due(pool, settings, now).await?,
        timesheet: timesheets(pool, settings, now).await?,
    })
}

fn link(settings: &Settings, path: &str) -> String {
    let mut url = settings.http.public_url.clone();
    url.set_path(path);
    url.to_string()
}

/// Assignees of open tasks (of active projects) due within the next 24 hours.
async fn task_due(pool: &PgPool, settings: &Settings, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await.context("beginning a reminder batch")?;
        let due = sqlx::query!(
            r#"
            WITH due AS (
                SELECT t.organization_id, t.id AS task_id, t.title, t.due_at, p.name AS project_name,
                       m.id AS member_id, m.name AS member_name, m.email,
                       extract(epoch FROM t.due_at)::bigint::text AS period
                FROM tasks t
                JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id
                JOIN task_assignments a ON a.organization_id = t.organization_id AND a.task_id = t.id
                JOIN team_members m ON m.organization_id = a.organization_id AND m.id = a.team_member_id
                WHERE t.status <> 'done' AND p.archived_at IS NULL
                  AND t.due_at > $1 AND t.due_at <= $1 + interval '24 hours'
                  AND NOT EXISTS (
                      SELECT 1 FROM reminders_sent r
                      WHERE r.organization_id = t.organization_id AND r.kind = 'task_due'
                        AND r.subject_id = t.id AND r.team_member_id = m.id
                        AND r.period = extract(epoch FROM t.due_at)::bigint::text)
                ORDER BY t.due_at
                LIMIT $2
            ), recorded AS (
                INSERT INTO reminders_sent (organization_id, kind, subject_id, team_member_id, period)
                SELECT organization_id, 'task_due', task_id, member_id, period FROM due
                ON CONFLICT DO NOTHING
                RETURNING subject_id, team_member_id
            )
            SELECT due.organization_id, due.task_id, due.title, due.due_at AS "due_at!",
                   due.project_name, due.member_name, due.email
            FROM due JOIN recorded ON recorded.subject_id = due.task_id
                                  AND recorded.team_member_id = due.member_id
            "#,
            now,
            BATCH,
        )
        .fetch_all(&mut *tx)
        .await
        .context("recording due-task reminders")?;
        let n = due.len();
        for d in due {
            let params = serde_json::json!({
                "recipient_name": d.member_name,
                "title": format!("{} is due soon", d.title),
                "body": format!(
                    "The task \"{}\" of the project {} is due on {}.",
                    d.title,
                    d.project_name,
                    d.due_at.format("%Y-%m-%d at %H:%M UTC"),
                ),
                "due_at": d.due_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                "url": link(settings, &format!("/tasks/{}", d.task_id)),
            });
            enqueue(
                &mut tx,
                &settings.encryption_key,
                &d.email,
                SystemTemplate::Reminder,
                &params,
                d.organization_id,
            )
            .await?;
        }
        tx.commit().await.context("committing a reminder batch")?;
        total += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
            return Ok(total);
        }
    }
}

async fn enqueue(
    conn: &mut PgConnection,
    key: &EncryptionKey,
    to: &str,
    template: SystemTemplate,
    params: &serde_json::Value,
    organization_id: Uuid,
) -> anyhow::Result<()> {
    enqueue_system(
        conn,
        key,
        to,
        template,
        params,
        Opts::organization(organization_id),
    )
    .await
    .context("enqueueing a reminder")?;
    Ok(())
}

/// When a member's week of work ends, in their zone: their last working day, an hour before
/// their day ends (16:00 without working hours). `None` when today is not that day or it is
/// earlier than that.
fn week_closes(
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

/// Team members at the close of their working week, asked to complete their timesheet.
async fn timesheets(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut total = 0;
    let mut after = Uuid::nil();
    loop {
        let members = sqlx::query!(
            r#"
            SELECT id, organization_id, user_id, name, email, time_zone, work_starts_at,
                   work_ends_at, working_days
            FROM team_members
            WHERE id > $1
            ORDER BY id
            LIMIT $2
            "#,
            after,
            BATCH,
        )
        .fetch_all(pool)
        .await
        .context("listing team members")?;
        let Some(last) = members.last() else {
            return Ok(total);
        };
        after = last.id;
        let n = members.len();
        let mut tx = pool.begin().await.context("beginning a timesheet batch")?;
        for m in members {
            let Ok(tz) = m.time_zone.parse::<Tz>() else {
                tracing::warn!(team_member.id = %m.id, zone = %m.time_zone, "unknown time zone; no timesheet reminder");
                continue;
            };
            let Some((week, week_start)) = week_closes(now, tz, &m.working_days, m.work_ends_at)
            else {
                continue;
            };
            let recorded = sqlx::query_scalar!(
                "INSERT INTO reminders_sent (organization_id, kind, subject_id, team_member_id, period)
                 VALUES ($1, 'timesheet', $2, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
                m.organization_id,
                m.id,
                week,
            )
            .fetch_optional(&mut *tx)
            .await
            .context("recording a timesheet reminder")?;
            if recorded.is_none() {
                continue;
            }
            let logged: i64 = match m.user_id {
                Some(user_id) => sqlx::query_scalar!(
                    r#"
                    SELECT coalesce(sum((details->>'minutes')::bigint), 0)::bigint AS "minutes!"
                    FROM task_work_history
                    WHERE organization_id = $1 AND actor_user_id = $2 AND action = 'work_logged'
                      AND occurred_at >= $3 AND occurred_at <= $4
                    "#,
                    m.organization_id,
                    user_id,
                    week_start,
                    now,
                )
                .fetch_one(&mut *tx)
                .await
                .context("summing the hours logged")?,
                None => 0,
            };
            let day_minutes = match (m.work_starts_at, m.work_ends_at) {
                (Some(start), Some(end)) => (end - start).num_minutes(),
                _ => 8 * 60,
            };
            let expected = day_minutes * i64::try_from(m.working_days.len()).unwrap_or(5);
            let params = serde_json::json!({
                "recipient_name": m.name,
                "period": format!("the week of {}", week_start.with_timezone(&tz).format("%Y-%m-%d")),
                "hours_logged": hours(logged),
                "hours_expected": hours(expected),
                "timesheet_url": link(settings, "/timesheets"),
            });
            enqueue(
                &mut tx,
                &settings.encryption_key,
                &m.email,
                SystemTemplate::TimesheetReminder,
                &params,
                m.organization_id,
            )
            .await?;
            total += 1;
        }
        tx.commit().await.context("committing a timesheet batch")?;
        if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
            return Ok(total);
        }
    }
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
}
