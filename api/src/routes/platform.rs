//! `/api/v1/platform`: what the dashboard's platform pages show and do, for platform operators
//! (users named by `ZOARK_OPERATORS`, whatever their role; never an API key): the whole
//! installation's queues, pausing a queue for everyone, the live workers, and any job of any
//! organization or of the platform.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;
use zoark_core::{
    access::{Granted, OperatePlatform},
    db::{tenant, users},
};
use zoark_jobs::admin::{self, Scope};

use crate::{
    auth::BearerAuth,
    error::ApiError,
    routes::{
        ApiTags,
        jobs::{Job, QueueList, QueuePauseState, admin_error, queue_list, queue_name},
    },
    state::AppState,
};

pub struct OperatorsApi;

/// A live worker process.
#[derive(Debug, Object)]
pub struct Worker {
    pub id: Uuid,
    pub hostname: String,
    pub pid: i32,
    /// The queues it serves.
    pub queues: Vec<String>,
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Jobs it is running now.
    pub running: i64,
}

#[derive(Debug, Object)]
pub struct WorkerList {
    pub items: Vec<Worker>,
}

/// The operator behind the request: 403 `operators_only` for anyone else.
async fn operator(auth: &BearerAuth, state: &AppState) -> Result<Operator, ApiError> {
    let granted = auth.grant::<OperatePlatform>(state).await?;
    let refused = || ApiError::Refused {
        code: "operators_only",
        detail: "Only the platform's operators (ZOARK_OPERATORS) may do this.".into(),
    };
    let user_id = granted.actor().user_id().ok_or_else(refused)?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let email = users::profile(&mut tx, user_id).await?.email;
    tx.commit().await?;
    if !state.settings.dashboard.is_operator(&email) {
        return Err(refused());
    }
    Ok(Operator {
        _granted: granted,
        user_id,
        email,
    })
}

struct Operator {
    _granted: Granted<OperatePlatform>,
    user_id: Uuid,
    email: String,
}

#[OpenApi(prefix_path = "/api/v1/platform", tag = "ApiTags::Platform")]
impl OperatorsApi {
    /// List the installation's queues
    ///
    /// Every organization's and the platform's jobs per queue and state, the age of the oldest
    /// waiting job, and whether the queue is paused for everyone. Platform operators only.
    #[oai(
        path = "/queues",
        method = "get",
        operation_id = "platform_queues_list"
    )]
    async fn queues(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<QueueList>, ApiError> {
        operator(&auth, &state).await?;
        let mut tx = tenant::system(&state.pool).await?;
        let items = queue_list(&mut tx, None).await?;
        tx.commit().await?;
        Ok(Json(QueueList { items }))
    }

    /// Pause a queue for everyone
    ///
    /// Workers claim no job of this queue, of any organization or of the platform, until it is
    /// resumed; running jobs finish. Idempotent. Platform operators only.
    #[oai(
        path = "/queues/:name/pause",
        method = "post",
        operation_id = "platform_queues_pause"
    )]
    async fn pause(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        name: Path<String>,
    ) -> Result<Json<QueuePauseState>, ApiError> {
        let operator = operator(&auth, &state).await?;
        let queue = queue_name(&name.0)?;
        let mut tx = tenant::system(&state.pool).await?;
        let (pause, paused_now) =
            admin::pause_queue(&mut tx, None, &queue, Some(operator.user_id)).await?;
        tx.commit().await?;
        if paused_now {
            tracing::info!(queue = queue.as_str(), operator = %operator.email, "queue paused for everyone");
        }
        Ok(Json(pause.into()))
    }

    /// Resume a queue for everyone
    ///
    /// Lifts an operator's pause of the whole queue (organizations' own pauses stay). Idempotent.
    /// Platform operators only.
    #[oai(
        path = "/queues/:name/resume",
        method = "post",
        operation_id = "platform_queues_resume"
    )]
    async fn resume(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        name: Path<String>,
    ) -> Result<Json<QueuePauseState>, ApiError> {
        let operator = operator(&auth, &state).await?;
        let queue = queue_name(&name.0)?;
        let mut tx = tenant::system(&state.pool).await?;
        let resumed = admin::resume_queue(&mut tx, None, &queue).await?;
        tx.commit().await?;
        if resumed {
            tracing::info!(queue = queue.as_str(), operator = %operator.email, "queue resumed for everyone");
        }
        Ok(Json(QueuePauseState {
            queue: queue.to_string(),
            paused: false,
            paused_at: None,
            paused_by: None,
        }))
    }

    /// List the live workers
    ///
    /// Every registered worker process with its queues, heartbeat age and running jobs.
    /// Platform operators only.
    #[oai(
        path = "/workers",
        method = "get",
        operation_id = "platform_workers_list"
    )]
    async fn workers(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<WorkerList>, ApiError> {
        operator(&auth, &state).await?;
        let mut tx = tenant::system(&state.pool).await?;
        let items = admin::workers(&mut tx)
            .await?
            .into_iter()
            .map(|w| Worker {
                id: w.id,
                hostname: w.hostname,
                pid: w.pid,
                queues: w.queues,
                started_at: w.started_at,
                heartbeat_age_secs: w.heartbeat_age_secs,
                running: w.running,
            })
            .collect();
        tx.commit().await?;
        Ok(Json(WorkerList { items }))
    }

    /// Get any job
    ///
    /// A job of any organization or of the platform. Platform operators only.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "platform_jobs_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        operator(&auth, &state).await?;
        let mut tx = tenant::system(&state.pool).await?;
        let job = admin::get(&mut tx, Scope::Installation, id.0)
            .await
            .map_err(admin_error)?;
        tx.commit().await?;
        Ok(Json(job.into()))
    }

    /// Retry any job
    ///
    /// As `POST /api/v1/jobs/{id}/retry`, for a job of any organization or of the platform.
    /// Platform operators only.
    #[oai(
        path = "/jobs/:id/retry",
        method = "post",
        operation_id = "platform_jobs_retry"
    )]
    async fn retry(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        act(&auth, &state, id.0, Action::Retry).await
    }

    /// Cancel any job
    ///
    /// As `POST /api/v1/jobs/{id}/cancel`, for a job of any organization or of the platform.
    /// Platform operators only.
    #[oai(
        path = "/jobs/:id/cancel",
        method = "post",
        operation_id = "platform_jobs_cancel"
    )]
    async fn cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        act(&auth, &state, id.0, Action::Cancel).await
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Retry,
    Cancel,
}

async fn act(
    auth: &BearerAuth,
    state: &AppState,
    id: Uuid,
    action: Action,
) -> Result<Json<Job>, ApiError> {
    let operator = operator(auth, state).await?;
    let mut tx = tenant::system(&state.pool).await?;
    let job = admin::get(&mut tx, Scope::Installation, id)
        .await
        .map_err(admin_error)?;
    let job = match action {
        Action::Retry => admin::retry(&mut tx, job.organization_id, id).await,
        Action::Cancel => admin::cancel(&mut tx, job.organization_id, id).await,
    }
    .map_err(admin_error)?;
    tx.commit().await?;
    tracing::info!(job = %id, ?action, operator = %operator.email, "operator acted on a job");
    Ok(Json(job.into()))
}
