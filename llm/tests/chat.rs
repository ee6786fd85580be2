//! The chat client against a wiremock server speaking the OpenAI API's documented shapes.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_partial_json, header, method, path},
};
use zoark_llm::{
    Chat, Endpoint, ProviderError,
    types::chat::{ChatCompletionMessageToolCalls, CreateChatCompletionRequest},
};

fn chat(server: &MockServer, timeout: Duration) -> Chat {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = Endpoint {
        base_url: format!("{}/v1/", server.uri()),
        api_key: Some("sk-test".into()),
        timeout,
    };
    let http = reqwest::Client::builder().build().unwrap();
    Chat::new(&endpoint, http)
}

fn request(body: Value) -> CreateChatCompletionRequest {
    serde_json::from_value(body).unwrap()
}

fn question() -> CreateChatCompletionRequest {
    request(json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Which tasks are stuck?"}],
        "tools": [{"type": "function", "function": {
            "name": "search_tasks", "description": "Search the organization's tasks",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "strict": true,
            "schema": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}}
    }))
}

fn completion(message: Value) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_806_400, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": null}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
    })
}

#[tokio::test]
async fn a_tool_call_comes_back_parsed_with_its_tokens_and_the_request_carries_tools_and_schema() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(json!({
            "tools": [{"type": "function", "function": {"name": "search_tasks"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true}}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "search_tasks", "arguments": "{\"query\":\"stuck\"}"}}]
        }))))
        .expect(1)
        .mount(&server)
        .await;

    let answer = chat(&server, Duration::from_secs(5))
        .complete(question())
        .await
        .unwrap();
    assert_eq!((answer.tokens_in, answer.tokens_out), (31, 12));
    let calls = answer.response.choices[0]
        .message
        .tool_calls
        .clone()
        .unwrap();
    let [ChatCompletionMessageToolCalls::Function(call)] = calls.as_slice() else {
        panic!("one function call expected: {calls:?}");
    };
    assert_eq!(
        (call.id.as_str(), call.function.name.as_str()),
        ("call_1", "search_tasks")
    );
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(args, json!({"query": "stuck"}));
}

async fn failure(response: ResponseTemplate, timeout: Duration) -> ProviderError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .mount(&server)
        .await;
    chat(&server, timeout)
        .complete(question())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_429_is_rate_limited_with_the_servers_retry_after() {
    let error = failure(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
        Duration::from_secs(5),
    )
    .await;
    let ProviderError::RateLimited {
        retry_after,
        message,
    } = error
    else {
        panic!("rate limited expected: {error:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
    assert!(message.contains("Rate limit reached"), "{message}");
}

#[tokio::test]
async fn a_5xx_and_a_timeout_are_unavailable_and_a_4xx_is_rejected_with_the_providers_message() {
    let error = failure(
        ResponseTemplate::new(503).set_body_string("upstream overloaded"),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Unavailable(m) if m.contains("503") && m.contains("upstream overloaded")),
        "{error:?}"
    );

    let error = failure(
        ResponseTemplate::new(200)
            .set_delay(Duration::from_secs(3))
            .set_body_json(completion(json!({"role": "assistant", "content": "late"}))),
        Duration::from_millis(300),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Unavailable(m) if m.contains("no answer within")),
        "{error:?}"
    );

    let error = failure(
        ResponseTemplate::new(404).set_body_json(json!({"error": {
            "message": "The model `gpt-9` does not exist", "type": "invalid_request_error",
            "param": null, "code": "model_not_found"}})),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Rejected(m) if m.contains("does not exist")),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_answer_without_a_choice_is_invalid() {
    let mut body = completion(json!({"role": "assistant", "content": "x"}));
    body["choices"] = json!([]);
    let error = failure(
        ResponseTemplate::new(200).set_body_json(body),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(error, ProviderError::Invalid(_)), "{error:?}");
}

#[tokio::test]
async fn the_model_list_names_the_providers_models() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_741, "owned_by": "system"},
                {"id": "llama3.1:8b", "object": "model", "created": 1_721_172_742, "owned_by": "library"}
            ]
        })))
        .mount(&server)
        .await;
    let models = chat(&server, Duration::from_secs(5))
        .models()
        .await
        .unwrap();
    assert_eq!(models, ["gpt-4o-mini", "llama3.1:8b"]);
}
