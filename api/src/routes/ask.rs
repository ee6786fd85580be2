//! `POST /api/v1/ask`: a question answered from the documents the caller may read, by a run of
//! the organization's question answerer (a built-in agent): its search and its LLM call are
//! steps like any run's, metered and held to the organization's monthly LLM budget. The request
//! waits for the run to end (`Prefer: wait=N`, 30 s by default, `respond-async` not at all) and
//! answers 200 with it, or 202 with the run to follow.

use std::time::Duration;

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json, types::Example};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::RunAgents,
    agents::{AgentKind, RunStatus},
    db::{
        agent_runs::{self, NewRun, Run},
        agents, tenant,
    },
    knowledge::{Answer, Cited, SourceType},
};

use crate::{
    auth::BearerAuth,
    error::ApiError,
    json::JsonBody,
    routes::{
        ApiTags,
        search::{Citation, SearchSource, language_of, query_text},
    },
    state::AppState,
};

pub struct AskApi;

/// `POST /ask`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct Question {
    /// 1 to 1,000 characters.
    pub question: String,
    /// Search only this source (still only what the caller may read).
    pub source_type: Option<SearchSource>,
    /// The text search configuration of the question's keywords (default `english`).
    pub language: Option<String>,
}

impl Example for Question {
    fn example() -> Self {
        Self {
            question: "Where is the spare hinge of the north gate?".into(),
            source_type: None,
            language: None,
        }
    }
}

/// A passage a claim rests on.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AnswerSource {
    /// As in search results: the knowledge base document, or the indexed copy of a team
    /// document or invoice.
    pub document_id: Uuid,
    pub source_type: SearchSource,
    pub title: String,
    pub citation: Citation,
}

impl From<Cited> for AnswerSource {
    fn from(c: Cited) -> Self {
        Self {
            document_id: c.document_id,
            source_type: c.source_type.into(),
            title: c.title,
            citation: Citation {
                chunk_ordinal: c.chunk_ordinal,
                page: c.page,
                heading: c.heading,
            },
        }
    }
}

/// One claim of the answer and the passages it rests on (at least one).
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AnswerClaim {
    pub text: String,
    pub sources: Vec<AnswerSource>,
}

/// Where a question stands: its run, and once the run succeeded, the answer.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AskAnswer {
    /// The question answerer's run: `GET /api/v1/agent-runs/{id}` shows its steps (the
    /// passages found, the LLM's request and answer).
    pub run_id: Uuid,
    /// `succeeded` with an answer; `failed` (no LLM provider, the provider refused),
    /// `budget_exhausted` (the month's LLM budget is spent) or `cancelled` with `error`;
    /// `queued` or `running` when the wait ended first (202).
    pub status: RunStatus,
    /// The answer. When nothing the caller may read matches, it says so and no LLM is asked.
    pub answer: Option<String>,
    /// The answer's claims, each citing its documents and chunks. A claim the LLM cited no
    /// passage found for is left out.
    pub claims: Vec<AnswerClaim>,
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    /// USD millionths.
    pub cost_micros: i64,
}

impl AskAnswer {
    fn of(run: Run) -> Result<Self, ApiError> {
        let answer = match (run.status, run.output) {
            (RunStatus::Succeeded, Some(output)) => Some(
                serde_json::from_value::<Answer>(output)
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored answer: {e}")))?,
            ),
            _ => None,
        };
        let (answer, claims) = match answer {
            Some(a) => (
                Some(a.answer),
                a.claims
                    .into_iter()
                    .map(|c| AnswerClaim {
                        text: c.text,
                        sources: c.sources.into_iter().map(AnswerSource::from).collect(),
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Ok(Self {
            run_id: run.id,
            status: run.status,
            answer,
            claims,
            error: run.error,
            tokens_in: run.tokens_in,
            tokens_out: run.tokens_out,
            cost_micros: run.cost_micros,
        })
    }
}

#[derive(ApiResponse)]
pub enum Asked {
    /// The run ended within the wait; `status` says how (only `succeeded` has an answer).
    #[oai(status = 200)]
    Ended(Json<AskAnswer>),
    /// The run is still under way: follow it at `Location` (or on the event stream).
    #[oai(status = 202)]
    Pending(
        Json<AskAnswer>,
        /// The run: `/api/v1/agent-runs/{id}`.
        #[oai(header = "Location")]
        String,
    ),
}

/// How long a request waits for its answer unless `Prefer` says otherwise (at most the
/// configured longest wait).
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The wait `Prefer` (RFC 7240) asks for: `respond-async` none, `wait=N` N seconds; at most
/// `max` (`ZOARK_ASK_MAX_WAIT_SECS`). Preferences not understood are ignored, as the RFC says.
fn wait_of(prefer: Option<&str>, max: Duration) -> Duration {
    let mut wait = DEFAULT_WAIT;
    for preference in prefer.unwrap_or_default().split(',') {
        let preference = preference.split(';').next().unwrap_or_default().trim();
        let (name, value) = preference
            .split_once('=')
            .map_or((preference, None), |(n, v)| (n.trim(), Some(v.trim())));
        if name.eq_ignore_ascii_case("respond-async") {
            return Duration::ZERO;
        }
        if name.eq_ignore_ascii_case("wait")
            && let Some(seconds) = value.and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        {
            wait = Duration::from_secs(seconds);
        }
    }
    wait.min(max)
}

#[OpenApi(tag = "ApiTags::Search", prefix_path = "/api/v1")]
impl AskApi {
    /// Ask the documents
    ///
    /// The organization's question answerer searches what the caller may read (hybrid search,
    /// as `GET /search`) and the LLM answers from the eight best passages, every claim citing
    /// its documents and chunks. It is an agent run like any other: its steps, tokens and cost
    /// are on `GET /api/v1/agent-runs/{id}`, and it is held to the organization's monthly LLM
    /// budget (`budget_exhausted`). The request waits for the answer: 30 s by default,
    /// `Prefer: wait=N` up to 60 s (`ZOARK_ASK_MAX_WAIT_SECS`), `Prefer: respond-async` not at
    /// all; 200 once the run ended
    /// (`status` says how), else 202 with `Location`. 409 `agent_disabled` when the question
    /// answerer is disabled. Needs `agents.run` (member).
    #[oai(path = "/ask", method = "post", operation_id = "ask")]
    async fn ask(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: JsonBody<Question>,
        /// `wait=N` (seconds, at most `ZOARK_ASK_MAX_WAIT_SECS`, 60 by default) or
        /// `respond-async`.
        #[oai(name = "Prefer")]
        prefer: Header<Option<String>>,
    ) -> Result<Asked, ApiError> {
        let granted = auth.grant::<RunAgents>(&state).await?;
        let body = body.0;
        let question = query_text("question", &body.question)?;
        let language = language_of(body.language.as_deref())?;
        let wait = wait_of(prefer.0.as_deref(), state.settings.agents.ask_max_wait);
        let organization_id = granted.organization_id();
        let input = serde_json::json!({
            "question": question,
            "source_type": body.source_type.map(SourceType::from),
            "language": language.as_str(),
        });
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let answerer = agents::builtin(&mut tx, organization_id, AgentKind::QuestionAnswerer)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no question answerer agent")))?;
        let enabled = agents::get(&mut tx, &granted, answerer)
            .await?
            .is_some_and(|a| a.enabled);
        if !enabled {
            return Err(ApiError::Conflict {
                code: "agent_disabled",
                detail: "The question answerer is disabled: enable it to ask.".into(),
            });
        }
        let new = NewRun::requested(&granted, answerer, &input);
        let run_id = zoark_jobs::agents::start(&mut tx, organization_id, &new)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a question was not recorded")))?;
        let watch = state.events.watch_runs();
        tx.commit().await?;
        if !wait.is_zero() {
            watch.until_finished(run_id, wait).await;
        }
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let run = agent_runs::get(&mut tx, &granted, run_id)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a question's run is gone")))?;
        tx.commit().await?;
        let finished = run.status.is_finished();
        let answer = AskAnswer::of(run)?;
        Ok(if finished {
            Asked::Ended(Json(answer))
        } else {
            Asked::Pending(Json(answer), format!("/api/v1/agent-runs/{run_id}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_sets_the_wait_within_the_configured_longest() {
        let max = Duration::from_secs(60);
        assert_eq!(wait_of(None, max), DEFAULT_WAIT);
        assert_eq!(wait_of(Some("respond-async"), max), Duration::ZERO);
        assert_eq!(wait_of(Some("wait=5"), max), Duration::from_secs(5));
        assert_eq!(wait_of(Some("handling=lenient, wait=600"), max), max);
        assert_eq!(wait_of(Some("wait=soon"), max), DEFAULT_WAIT);
        assert_eq!(wait_of(Some("wait=3, respond-async"), max), Duration::ZERO);
        assert_eq!(wait_of(None, Duration::ZERO), Duration::ZERO);
    }
}
