//! `GET /api/v1/events`: a WebSocket of job state changes for the caller's organization.
//!
//! Workers and API replicas change jobs; a statement trigger sends the changes of tenant jobs on
//! `zoark_job_events`. Each API process LISTENs once and fans the events out to its sockets, so
//! any replica sees events from any worker.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use poem::{
    IntoResponse, Request, Response, handler,
    web::{
        Data,
        websocket::{Message, WebSocket},
    },
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use uuid::Uuid;

use zoark_core::access::ReadJobs;

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

/// The process's fan-out of job events.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<Vec<JobEvent>>>,
}

impl EventHub {
    /// Starts listening on `zoark_job_events` (reconnecting as needed) for the process's life.
    pub fn start(pool: PgPool) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let hub = Self { tx };
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

    fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<JobEvent>>> {
        self.tx.subscribe()
    }
}

async fn listen(
    pool: &PgPool,
    tx: &broadcast::Sender<Arc<Vec<JobEvent>>>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen("zoark_job_events").await?;
    loop {
        let n = listener.recv().await?;
        match serde_json::from_str::<Vec<JobEvent>>(n.payload()) {
            // No subscriber is not an error.
            Ok(batch) => drop(tx.send(Arc::new(batch))),
            Err(error) => tracing::warn!(%error, "unreadable job event payload"),
        }
    }
}

/// Upgrades to a WebSocket sending one JSON text message per job state change of the caller's
/// organization. Authenticate with `Authorization: Bearer` on the upgrade request.
#[handler]
pub async fn events(
    req: &Request,
    ws: Option<WebSocket>,
    state: Data<&AppState>,
    request_id: Data<&RequestId>,
) -> Response {
    let granted = match auth::bearer(req) {
        Some(token) => auth::authenticate(&state, token)
            .await
            .and_then(|p| Ok(p.authorize::<ReadJobs>()?)),
        None => Err(ApiError::Unauthorized),
    };
    let granted = match granted {
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
    let mut rx = state.events.subscribe();
    let org = granted.organization_id();
    ws.on_upgrade(move |socket| async move {
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                batch = rx.recv() => match batch {
                    Ok(batch) => {
                        for event in batch.iter().filter(|e| e.organization_id == org) {
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
