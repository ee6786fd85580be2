//! Any OpenAI-compatible API (OpenAI, Azure OpenAI, Ollama, vLLM, LiteLLM), through async-openai
//! over the caller's reqwest client: [`chat`] for agents, [`provider`] for the connection and the
//! failures every caller treats the same way (document embeddings use it too).

pub mod chat;
pub mod provider;

pub use async_openai::types;
pub use chat::{Chat, Completion};
pub use provider::{Endpoint, ProviderError};
