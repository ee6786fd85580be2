//! The built-in question answerer (`POST /api/v1/ask`): the question is searched in the
//! documents the asker may read (their role at run time, never more than when they asked), and
//! the LLM answers from the passages found, with a JSON schema that makes every claim name the
//! passages it rests on. Claims are mapped back to their documents and chunks; a passage number
//! the search did not return is dropped, and so is a claim left citing nothing.
//!
//! Two steps: a `tool_call` (`search_documents`) whose passages are stored, and one `llm_call`
//! whose answer is stored, so a resumed run neither searches again (the answer cites what was
//! found then) nor asks again. Nothing found: the run says so without asking the LLM.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use zoark_core::{
    access::{Principal, ProvenTenant, ReadKnowledge},
    agents::{StepKind, StepStatus},
    db::{
        agent_runs::{self, Run},
        agents::Agent,
        knowledge::Language,
    },
    knowledge::{Answer, Cited, Claim, SourceType},
};

use super::{End, Resumed, llm_answer, message_text, notify::EffectStep, tools::Passages};
use crate::{WorkerContext, engine::JobError};

/// Passages the answer is grounded on at most.
const PASSAGES: i64 = 8;

/// What the run's input says (written by the API, which checked it).
#[derive(Deserialize)]
struct Question {
    question: String,
    source_type: Option<SourceType>,
    language: Option<String>,
}

/// A passage as the search step stored it.
#[derive(Deserialize)]
struct Passage {
    document_id: Uuid,
    source_type: SourceType,
    title: String,
    chunk: i32,
    page: Option<i32>,
    heading: Option<String>,
    passage: String,
}

/// The LLM's answer, as its schema asks.
#[derive(Deserialize)]
struct Reply {
    answer: String,
    claims: Vec<ReplyClaim>,
}

#[derive(Deserialize)]
struct ReplyClaim {
    text: String,
    passages: Vec<i64>,
}

/// The answer when the search finds nothing.
pub const NOTHING_FOUND: &str = "Nothing in the documents you may read matches the question.";

/// Runs the question answerer.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let org = run.organization_id;
    let Ok(asked) = serde_json::from_value::<Question>(run.input.clone()) else {
        return Ok(End::Failed("the run's input has no question".into()));
    };
    let mut conn = ctx.pool.acquire().await?;
    // The asker's role now, never more than when they asked (an API key's is its role then).
    let role = match run.triggered_by {
        Some(user) => agent_runs::acting_role(&mut conn, org, user, None)
            .await?
            .map(|role| run.max_role.map_or(role, |max| role.lesser(max))),
        None => run.max_role,
    };
    let Some(role) = role else {
        return Ok(End::Failed(
            "whoever asked is no longer a member of the organization".into(),
        ));
    };
    let principal =
        Principal::agent_run(org, role, run.triggered_by.unwrap_or(Uuid::nil()), run.id);
    let Resumed {
        llm,
        steps,
        mut position,
    } = Resumed::load(ctx, &mut conn, run, def).await?;
    drop(conn);
    let Some(llm) = llm else {
        return Ok(End::Failed(
            "no LLM provider: add one with POST /api/v1/llm-credentials".into(),
        ));
    };
    let stored = |kind: StepKind| {
        steps
            .iter()
            .find(|s| s.kind == kind && s.status == StepStatus::Succeeded)
            .and_then(|s| s.response.clone())
    };

    let found = match stored(StepKind::ToolCall) {
        Some(found) => found,
        None => {
            let Ok(granted) = principal.authorize::<ReadKnowledge>() else {
                return Ok(End::Failed(format!(
                    "a {} may not search the documents",
                    role.as_str()
                )));
            };
            let sources: Vec<SourceType> = SourceType::ALL
                .into_iter()
                .filter(|s| s.readable_by(role))
                .filter(|s| asked.source_type.is_none_or(|only| only == *s))
                .collect();
            let language = asked
                .language
                .as_deref()
                .and_then(Language::parse)
                .unwrap_or(Language::ENGLISH);
            position += 1;
            let request = json!({"name": "search_documents", "arguments": {
                "query": asked.question, "source_type": asked.source_type,
                "language": language.as_str()}});
            let scope = ProvenTenant {
                organization_id: org,
                actor: Some(principal.actor()),
            };
            let mut step =
                EffectStep::begin_as(ctx, run, &scope, position, StepKind::ToolCall, &request)
                    .await?;
            let search = Passages {
                text: &asked.question,
                sources,
                language,
                limit: PASSAGES,
            };
            let found = search.find(ctx, step.conn(), &granted).await?;
            step.finish(found.clone()).await?;
            found
        }
    };
    let passages: Vec<Passage> = found
        .get("passages")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("the stored passages do not read: {e}")))?
        .unwrap_or_default();
    if passages.is_empty() {
        return Ok(finished(&Answer {
            answer: NOTHING_FOUND.into(),
            claims: Vec::new(),
        }));
    }

    let content = match stored(StepKind::LlmCall)
        .and_then(|r| r.pointer("/message/content")?.as_str().map(str::to_owned))
    {
        Some(content) => content,
        None => {
            position += 1;
            let numbered: Vec<Value> = passages
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    json!({"n": i + 1, "title": p.title, "heading": p.heading, "page": p.page,
                           "text": p.passage})
                })
                .collect();
            let request = json!({
                "model": llm.model,
                "messages": [
                    {"role": "system", "content": "You answer a question from numbered passages \
                      of a team's documents. Use only what the passages say; invent nothing. \
                      Split the answer into claims, and give each claim the numbers of the \
                      passages that support it. When the passages do not answer the question, \
                      say so in `answer` and give no claims."},
                    {"role": "user", "content": json!({"question": asked.question,
                      "passages": numbered}).to_string()},
                ],
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "answer", "strict": true, "schema": schema()}},
            });
            match llm_answer(ctx, run, def, &llm, position, request).await? {
                Ok(message) => message_text(&message),
                Err(end) => return Ok(end),
            }
        }
    };
    match serde_json::from_str::<Reply>(&content) {
        Ok(reply) => Ok(finished(&cite(reply, &passages))),
        Err(e) => Ok(End::Failed(format!(
            "the LLM's answer is not the JSON asked for: {e}"
        ))),
    }
}

fn finished(answer: &Answer) -> End {
    match serde_json::to_value(answer) {
        Ok(output) => End::Succeeded(output),
        Err(e) => End::Failed(format!("the answer does not serialize: {e}")),
    }
}

/// The structured output asked of the LLM.
fn schema() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["answer", "claims"],
        "properties": {
            "answer": {"type": "string"},
            "claims": {"type": "array", "items": {
                "type": "object", "additionalProperties": false,
                "required": ["text", "passages"],
                "properties": {
                    "text": {"type": "string"},
                    "passages": {"type": "array", "items": {"type": "integer"}},
                },
            }},
        },
    })
}

/// The reply's claims with their passage numbers turned into citations; numbers outside the
/// passages are dropped (each passage cited once per claim), and claims citing nothing with
/// them.
fn cite(reply: Reply, passages: &[Passage]) -> Answer {
    let claims = reply
        .claims
        .into_iter()
        .filter_map(|claim| {
            let mut numbers: Vec<usize> = claim
                .passages
                .iter()
                .filter_map(|n| usize::try_from(*n).ok())
                .filter(|n| (1..=passages.len()).contains(n))
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            let sources: Vec<Cited> = numbers
                .into_iter()
                .filter_map(|n| passages.get(n - 1))
                .map(|p| Cited {
                    document_id: p.document_id,
                    source_type: p.source_type,
                    title: p.title.clone(),
                    chunk_ordinal: p.chunk,
                    page: p.page,
                    heading: p.heading.clone(),
                })
                .collect();
            (!sources.is_empty()).then_some(Claim {
                text: claim.text,
                sources,
            })
        })
        .collect();
    Answer {
        answer: reply.answer,
        claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(title: &str, chunk: i32) -> Passage {
        Passage {
            document_id: Uuid::nil(),
            source_type: SourceType::Knowledge,
            title: title.into(),
            chunk,
            page: None,
            heading: None,
            passage: String::new(),
        }
    }

    #[test]
    fn citations_outside_the_passages_are_dropped_and_so_are_claims_left_without_one() {
        let passages = [passage("Gate", 0), passage("Shed", 3)];
        let reply = Reply {
            answer: "The spare is in shed B.".into(),
            claims: vec![
                ReplyClaim {
                    text: "The hinge is HX-4.".into(),
                    passages: vec![1, 1, 7, -2],
                },
                ReplyClaim {
                    text: "Made up.".into(),
                    passages: vec![0, 3],
                },
                ReplyClaim {
                    text: "The spare is in shed B.".into(),
                    passages: vec![2, 1],
                },
            ],
        };
        let answer = cite(reply, &passages);
        assert_eq!(answer.claims.len(), 2);
        assert_eq!(answer.claims[0].sources.len(), 1);
        assert_eq!(answer.claims[0].sources[0].title, "Gate");
        let second: Vec<i32> = answer.claims[1]
            .sources
            .iter()
            .map(|s| s.chunk_ordinal)
            .collect();
        assert_eq!(second, [0, 3]);
    }
}
