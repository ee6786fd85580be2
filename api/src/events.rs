//! `GET /api/v1/events`: a WebSocket of job, agent run and agent step state changes for the
//! caller's organization, each message with its `type` (`job`, `agent_run`, `agent_step`).
//!
//! Workers and API replicas change jobs and runs; a statement trigger sends the changes of
//! tenant jobs on `zoark_job_events`, row triggers those of runs and steps on
//! `zoark_agent_events`. Each API process LISTENs once and fans the events out to its sockets,
//! so any replica sees events from any worker. Agent messages go to callers who may read agents
//! (`agents.read`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use poem::{
    IntoResponse, Request, Response, handler,
    web::{
        Data,
        websocket::{CloseCode, Message, WebSocket},
    },
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use uuid::Uuid;

use zoark_core::{
    access::{Actor, Permission as _, ReadAgents, ReadJobs, Role},
    agents::{RunStatus, RunTrigger, StepKind, StepStatus},
    db::{api_keys, sessions, tenant},
};

use crate::{
    auth,
    error::{ApiError, problem_response},
    middleware::RequestId,
    state::AppState,
};

/// One job's new state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub attempt: i32,
    /// How far a running job has got, for jobs that report it (document indexing: chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<zoark_jobs::Progress>,
}

/// An agent run's new status (or a cancel asked for).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRunEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub agent_id: Uuid,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    pub cancel_requested: bool,
    pub error: Option<String>,
}

/// An agent step's new status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStepEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub run_id: Uuid,
    pub position: i32,
    pub kind: StepKind,
    pub status: StepStatus,
    pub error: Option<String>,
}

/// What one statement did to platform jobs (of no organization), for operators: per queue,
/// how many jobs it moved into each state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformJobsEvent {
    pub queues: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>>,
}

/// One message of the stream: its `type` and the fields of that kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Job(JobEvent),
    AgentRun(AgentRunEvent),
    AgentStep(AgentStepEvent),
    PlatformJobs(PlatformJobsEvent),
}

/// Who a socket streams to, and so which events it gets.
#[derive(Debug, Clone, Copy)]
struct Audience {
    organization_id: Uuid,
    reads_agents: bool,
    /// A platform operator (signed in to the dashboard): every organization's job events and
    /// the platform's.
    operator: bool,
}

impl Event {
    fn organization_id(&self) -> Option<Uuid> {
        match self {
            Self::Job(e) => Some(e.organization_id),
            Self::AgentRun(e) => Some(e.organization_id),
            Self::AgentStep(e) => Some(e.organization_id),
            Self::PlatformJobs(_) => None,
        }
    }

    fn visible_to(&self, audience: Audience) -> bool {
        let own = self.organization_id() == Some(audience.organization_id);
        match self {
            Self::Job(_) => own || audience.operator,
            Self::AgentRun(_) | Self::AgentStep(_) => own && audience.reads_agents,
            Self::PlatformJobs(_) => audience.operator,
        }
    }
}

/// The process's fan-out of events.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Vec<Event>>>,
    /// Operators' streams open in this process: while there is one, platform job summaries
    /// are asked for (`job_event_watchers`).
    operators: Arc<AtomicUsize>,
    pool: PgPool,
}

/// How far ahead an open operator stream keeps `job_event_watchers`, and how often it renews.
const WATCH_AHEAD_SECS: f64 = 60.0;
const WATCH_RENEW: Duration = Duration::from_secs(20);

/// Asks the `jobs` trigger for platform job summaries for the next minute.
async fn watch_platform(pool: &PgPool) -> Result<(), sqlx::Error> {
    // A platform table: written in a platform transaction, as authentication's are.
    let mut tx = zoark_core::db::tenant::system(pool).await?;
    sqlx::query!(
        "INSERT INTO job_event_watchers (channel, until)
         VALUES ('platform', now() + make_interval(secs => $1))
         ON CONFLICT (channel) DO UPDATE SET until = greatest(job_event_watchers.until, excluded.until)",
        WATCH_AHEAD_SECS,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// An operator's open stream; dropping it ends its watch (the last one lets the watch lapse).
pub struct OperatorWatch(Arc<AtomicUsize>);

impl Drop for OperatorWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EventHub {
    /// Starts listening on `zoark_job_events` (reconnecting as needed) for the process's life.
    pub fn start(pool: PgPool) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self {
            tx,
            operators: Arc::new(AtomicUsize::new(0)),
            pool: pool.clone(),
        };
        let operators = hub.operators.clone();
        let renewing = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_RENEW).await;
                if operators.load(Ordering::SeqCst) > 0
                    && let Err(error) = watch_platform(&renewing).await
                {
                    tracing::warn!(%error, "renewing the platform job events watch failed");
                }
            }
        });
        let sender = hub.tx.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = listen(&pool, &sender).await {
                    tracing::warn!(%error, "job events listener failed; reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        hub
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.tx.subscribe()
    }

    /// An operator's stream opens: platform job summaries from now on, for as long as the
    /// returned watch lives.
    ///
    /// # Errors
    /// A database error asking for them.
    pub async fn watch_platform(&self) -> Result<OperatorWatch, sqlx::Error> {
        self.operators.fetch_add(1, Ordering::SeqCst);
        let watch = OperatorWatch(self.operators.clone());
        watch_platform(&self.pool).await?;
        Ok(watch)
    }

    /// Events from now on, to wait for a run's end: take it before the run's transaction
    /// commits, so that its end cannot come first.
    pub fn watch_runs(&self) -> RunWatch {
        RunWatch(self.subscribe())
    }
}

/// See [`EventHub::watch_runs`].
pub struct RunWatch(broadcast::Receiver<Arc<Vec<Event>>>);

impl RunWatch {
    /// Returns once run `id` has finished, or after `within`. Either way the caller reads the
    /// run: an event missed (a listener reconnecting, a lagging receiver) only means waiting the
    /// whole time.
    pub async fn until_finished(mut self, id: Uuid, within: Duration) {
        let finished = |batch: &[Event]| {
            batch.iter().any(
                |e| matches!(e, Event::AgentRun(run) if run.id == id && run.status.is_finished()),
            )
        };
        let wait = async {
            loop {
                match self.0.recv().await {
                    Ok(batch) if finished(&batch) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        // Timing out is one of the two ways this ends.
        drop(tokio::time::timeout(within, wait).await);
    }
}

/// The events of one notification: a batch of jobs, or one run or step.
fn parse(channel: &str, payload: &str) -> serde_json::Result<Vec<Event>> {
    match channel {
        "zoark_job_events" => {
            let jobs: Vec<JobEvent> = serde_json::from_str(payload)?;
            Ok(jobs.into_iter().map(Event::Job).collect())
        }
        "zoark_platform_job_events" => Ok(vec![Event::PlatformJobs(PlatformJobsEvent {
            queues: serde_json::from_str(payload)?,
        })]),
        _ => Ok(vec![serde_json::from_str(payload)?]),
    }
}

async fn listen(pool: &PgPool, tx: &broadcast::Sender<Arc<Vec<Event>>>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([
            "zoark_job_events",
            "zoark_agent_events",
            "zoark_platform_job_events",
        ])
        .await?;
    loop {
        let n = listener.recv().await?;
        match parse(n.channel(), n.payload()) {
            // No subscriber is not an error.
            Ok(batch) => drop(tx.send(Arc::new(batch))),
            Err(error) => tracing::warn!(%error, channel = n.channel(), "unreadable event payload"),
        }
    }
}

/// Whether the request's `Origin` is this server as the browser reached it (the `Host` it
/// sent) or the configured public URL.
fn same_origin(req: &Request, settings: &zoark_core::Settings) -> bool {
    let Some(origin) = req.header("origin").and_then(|o| url::Url::parse(o).ok()) else {
        return false;
    };
    let public = settings.http.public_url.origin();
    if origin.origin() == public {
        return true;
    }
    let authority = match (origin.host_str(), origin.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return false,
    };
    req.header("host").is_some_and(|host| host == authority)
}

/// Whether the caller behind an open stream may still read it: its session live (user enabled,
/// still a member of a live organization) or its API key unrevoked, with a role that reads
/// jobs. A database error keeps the stream (the next check decides).
async fn still_allowed(pool: &PgPool, org: Uuid, actor: Actor) -> bool {
    let check = async {
        let mut tx = tenant::system(pool).await?;
        let role = match actor {
            Actor::User {
                user_id,
                session_id,
            } => sessions::live_role(&mut tx, org, session_id, user_id).await?,
            Actor::ApiKey { key_id } => api_keys::live_role(&mut tx, org, key_id)
                .await?
                .and_then(|r| r.parse::<Role>().ok()),
            Actor::Agent { .. } => None,
        };
        tx.commit().await?;
        Ok::<_, sqlx::Error>(role.is_some_and(|r| r.includes(ReadJobs::MIN_ROLE)))
    };
    check.await.unwrap_or(true)
}

/// Upgrades to a WebSocket sending one JSON text message per job, agent run and agent step state
/// change of the caller's organization (agent ones only to roles that read agents).
/// Authenticate with `Authorization: Bearer` on the upgrade request, or (a browser) with the
/// dashboard's session cookie from a page of the same origin. Every `ZOARK_STREAM_RECHECK_SECS`
/// the stream re-checks its session or key and closes (1008, policy) once it has ended.
#[handler]
pub async fn events(
    req: &Request,
    ws: Option<WebSocket>,
    state: Data<&AppState>,
    request_id: Data<&RequestId>,
) -> Response {
    let principal = match auth::bearer(req) {
        Some(token) => auth::authenticate(&state, token)
            .await
            .map(|principal| (principal, false)),
        // A browser cannot set `Authorization` on a WebSocket: the dashboard's session cookie,
        // from a page of this origin only (another site's page would send the cookie too).
        None if same_origin(req, &state.settings) => {
            crate::dashboard::session::authenticate(&state, req)
                .await
                .map(|(principal, session)| {
                    let operator = state.settings.dashboard.is_operator(&session.email);
                    (principal, operator)
                })
        }
        None => Err(ApiError::Unauthorized),
    };
    let granted = principal.and_then(|(p, operator)| Ok((p.authorize::<ReadJobs>()?, operator)));
    let (granted, operator) = match granted {
        Ok(granted) => granted,
        Err(error) => return problem_response(&error, Some(&request_id.0.0)),
    };
    let Some(ws) = ws else {
        let error = ApiError::InvalidParameter(crate::error::FieldError {
            field: "upgrade".into(),
            message: "this endpoint only speaks WebSocket".into(),
        });
        return problem_response(&error, Some(&request_id.0.0));
    };
    let watch = if operator {
        match state.events.watch_platform().await {
            Ok(watch) => Some(watch),
            Err(error) => return problem_response(&error.into(), Some(&request_id.0.0)),
        }
    } else {
        None
    };
    let mut rx = state.events.subscribe();
    let caller = (granted.organization_id(), granted.actor());
    let recheck_every = state.settings.auth.stream_recheck;
    let pool = state.pool.clone();
    let audience = Audience {
        organization_id: granted.organization_id(),
        reads_agents: granted.role().includes(ReadAgents::MIN_ROLE),
        operator,
    };
    ws.on_upgrade(move |socket| async move {
        let _watch = watch;
        let (mut sink, mut stream) = socket.split();
        let mut recheck = tokio::time::interval_at(
            tokio::time::Instant::now() + recheck_every,
            recheck_every,
        );
        loop {
            tokio::select! {
                _ = recheck.tick() => {
                    if !still_allowed(&pool, caller.0, caller.1).await {
                        let close = Message::Close(Some((
                            CloseCode::Policy,
                            "the session or key behind this stream ended".into(),
                        )));
                        let _ = sink.send(close).await;
                        return;
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                batch = rx.recv() => match batch {
                    Ok(batch) => {
                        let visible = batch.iter().filter(|e| e.visible_to(audience));
                        for event in visible {
                            let Ok(text) = serde_json::to_string(event) else { continue };
                            if sink.send(Message::Text(text)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let notice = serde_json::json!({ "type": "lagged", "missed_batches": missed });
                        if sink.send(Message::Text(notice.to_string())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    })
    .into_response()
}
