//! wiremock servers standing in for the HTTP services that cannot be reached from here. Each
//! speaks the real service's documented shapes once a test mounts its mocks; the app reaches
//! them because every client takes its base URL from the settings.

use wiremock::MockServer;

/// One mock server per external HTTP service.
pub struct Peers {
    /// OpenAI-compatible chat completions.
    pub llm: MockServer,
    /// OpenAI-compatible embeddings.
    pub embeddings: MockServer,
    /// Google OAuth (authorize, token) and the Gmail API.
    pub google: MockServer,
    /// Microsoft identity platform (authorize, token) and Microsoft Graph.
    pub microsoft: MockServer,
}

impl Peers {
    pub async fn start() -> Self {
        Self {
            llm: MockServer::start().await,
            embeddings: MockServer::start().await,
            google: MockServer::start().await,
            microsoft: MockServer::start().await,
        }
    }

    /// The environment that points every client at these servers.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let google = self.google.uri();
        let microsoft = self.microsoft.uri();
        vec![
            ("ZOARK_LLM_BASE_URL", format!("{}/v1/", self.llm.uri())),
            ("ZOARK_LLM_API_KEY", "test-llm-key".into()),
            (
                "ZOARK_EMBEDDING_BASE_URL",
                format!("{}/v1/", self.embeddings.uri()),
            ),
            ("ZOARK_EMBEDDING_API_KEY", "test-embedding-key".into()),
            ("ZOARK_GOOGLE_CLIENT_ID", "test-google-client".into()),
            ("ZOARK_GOOGLE_CLIENT_SECRET", "test-google-secret".into()),
            (
                "ZOARK_GOOGLE_AUTHORIZE_URL",
                format!("{google}/o/oauth2/v2/auth"),
            ),
            ("ZOARK_GOOGLE_TOKEN_URL", format!("{google}/token")),
            ("ZOARK_GMAIL_API_BASE_URL", format!("{google}/")),
            ("ZOARK_MICROSOFT_CLIENT_ID", "test-microsoft-client".into()),
            (
                "ZOARK_MICROSOFT_CLIENT_SECRET",
                "test-microsoft-secret".into(),
            ),
            (
                "ZOARK_MICROSOFT_AUTHORIZE_URL",
                format!("{microsoft}/common/oauth2/v2.0/authorize"),
            ),
            (
                "ZOARK_MICROSOFT_TOKEN_URL",
                format!("{microsoft}/common/oauth2/v2.0/token"),
            ),
            ("ZOARK_GRAPH_API_BASE_URL", format!("{microsoft}/v1.0/")),
        ]
    }
}

/// The JSON bodies of the requests a wiremock server received, in order.
///
/// # Panics
/// When the server does not record requests or a body is not JSON (a test's failure).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub async fn json_bodies(server: &wiremock::MockServer) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .expect("the mock server records requests")
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON request body"))
        .collect()
}
