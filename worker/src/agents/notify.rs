//! A step of a built-in agent with an effect (an `email` step, or a `tool_call` that enqueues
//! work): the step row, the emails or jobs it enqueues, the records that keep them from being
//! done again (a `reminders_sent` row, a nudge count) and its activity entries all commit in one
//! transaction with the step's result. A crash before the commit
//! leaves nothing (the resumed run finds the same work to do); after it, the work is done and
//! recorded, so a resumed run no longer finds it.

use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;
use zoark_core::{
    access::ProvenTenant,
    agents::{ActivityAction, ActivityStatus, StepKind},
    db::{
        agent_runs::{self, Activity, Run, StepResult},
        memberships::Contact,
        tenant,
    },
};
use zoark_jobs::{
    Opts,
    email::{SystemTemplate, enqueue_system},
};

use crate::{WorkerContext, engine::JobError};

/// A step under way: commit it with [`EffectStep::finish`]; dropped, it rolls back.
pub struct EffectStep<'a> {
    ctx: &'a WorkerContext,
    run: &'a Run,
    tx: Transaction<'static, Postgres>,
    step: Uuid,
    sent: usize,
}

impl<'a> EffectStep<'a> {
    /// Records step `position` of `run` as a running `email` step with `request`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn email(
        ctx: &'a WorkerContext,
        run: &'a Run,
        position: i32,
        request: &Value,
    ) -> Result<Self, JobError> {
        Self::begin(ctx, run, position, StepKind::Email, request).await
    }

    /// Records step `position` of `run` as a running step of `kind` with `request`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin(
        ctx: &'a WorkerContext,
        run: &'a Run,
        position: i32,
        kind: StepKind,
        request: &Value,
    ) -> Result<Self, JobError> {
        let tx = ctx.pool.begin().await?;
        Self::start(ctx, run, tx, position, kind, request).await
    }

    /// [`EffectStep::begin`] in a transaction of the run's organization acting as `scope`'s
    /// actor (row security on, the writes attributed to them).
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_as(
        ctx: &'a WorkerContext,
        run: &'a Run,
        scope: &ProvenTenant,
        position: i32,
        kind: StepKind,
        request: &Value,
    ) -> Result<Self, JobError> {
        let tx = tenant::begin(&ctx.pool, scope).await?;
        Self::start(ctx, run, tx, position, kind, request).await
    }

    async fn start(
        ctx: &'a WorkerContext,
        run: &'a Run,
        mut tx: Transaction<'static, Postgres>,
        position: i32,
        kind: StepKind,
        request: &Value,
    ) -> Result<Self, JobError> {
        let step = agent_runs::begin_step(&mut tx, run, position, kind, request).await?;
        Ok(Self {
            ctx,
            run,
            tx,
            step,
            sent: 0,
        })
    }

    /// The step's transaction, for the writes that commit with it.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Enqueues one system email to `to`, in the organization's name.
    ///
    /// # Errors
    /// Database errors, or parameters the template refuses.
    pub async fn send(
        &mut self,
        to: &Contact,
        template: SystemTemplate,
        params: &Value,
    ) -> Result<(), JobError> {
        enqueue_system(
            &mut self.tx,
            &self.ctx.settings.encryption_key,
            &to.email,
            template,
            params,
            Opts::organization(self.run.organization_id),
        )
        .await
        .map_err(anyhow::Error::from)?;
        self.sent += 1;
        Ok(())
    }

    /// Enqueues the reminder template (`title`, `body`, a link to `url`) to each of `to`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn remind(
        &mut self,
        to: &[Contact],
        title: &str,
        body: &str,
        url: &str,
    ) -> Result<(), JobError> {
        for contact in to {
            let params = serde_json::json!({
                "recipient_name": contact.name, "title": title, "body": body, "url": url,
            });
            self.send(contact, SystemTemplate::Reminder, &params)
                .await?;
        }
        Ok(())
    }

    /// Records a successful activity entry of the run.
    ///
    /// # Errors
    /// Database errors.
    pub async fn activity(
        &mut self,
        action: ActivityAction,
        summary: &str,
        context: &Value,
    ) -> Result<(), JobError> {
        let entry = Activity {
            organization_id: self.run.organization_id,
            agent_id: Some(self.run.agent_id),
            run_id: Some(self.run.id),
            action,
            status: ActivityStatus::Success,
            summary,
            context,
        };
        agent_runs::record_activity(&mut self.tx, &entry).await?;
        Ok(())
    }

    /// Emails enqueued so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Writes the step's result and commits everything.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish(mut self, response: Value) -> Result<(), JobError> {
        agent_runs::finish_step(
            &mut self.tx,
            self.run,
            self.step,
            &StepResult::succeeded(response),
        )
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// The people to write to, each address once (case aside), in address order.
pub fn recipients(people: impl IntoIterator<Item = Contact>) -> Vec<Contact> {
    let mut to: Vec<Contact> = people.into_iter().collect();
    to.sort_by_key(|c| c.email.to_lowercase());
    to.dedup_by(|a, b| a.email.eq_ignore_ascii_case(&b.email));
    to
}
