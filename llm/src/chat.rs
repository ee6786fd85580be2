//! Chat completions (with tool calling and JSON-schema structured output) and the model list of
//! an OpenAI-compatible API.

use async_openai::{
    Client,
    config::OpenAIConfig,
    types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse},
};

use crate::provider::{self, Endpoint, ProviderError};

/// One provider's chat API.
#[derive(Clone)]
pub struct Chat {
    client: Client<OpenAIConfig>,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").finish_non_exhaustive()
    }
}

/// A provider's answer and the tokens it counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub response: CreateChatCompletionResponse,
    pub tokens_in: u32,
    pub tokens_out: u32,
}

impl Chat {
    /// The chat API of `endpoint`, through `http`.
    pub fn new(endpoint: &Endpoint, http: reqwest::Client) -> Self {
        Self {
            client: provider::client(endpoint, http),
            timeout: endpoint.timeout,
        }
    }

    /// Sends one chat completion request.
    ///
    /// # Errors
    /// [`ProviderError`]; an answer without a choice is [`ProviderError::Invalid`].
    pub async fn complete(
        &self,
        request: CreateChatCompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let chat = self.client.chat();
        let response = provider::call(self.timeout, chat.create(request)).await?;
        if response.choices.is_empty() {
            return Err(ProviderError::Invalid("an answer without a choice".into()));
        }
        let (tokens_in, tokens_out) = response
            .usage
            .as_ref()
            .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        Ok(Completion {
            response,
            tokens_in,
            tokens_out,
        })
    }

    /// The models the provider offers (the check of a credential).
    ///
    /// # Errors
    /// [`ProviderError`].
    pub async fn models(&self) -> Result<Vec<String>, ProviderError> {
        let models = self.client.models();
        let list = provider::call(self.timeout, models.list()).await?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}
