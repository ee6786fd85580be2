//! A real headless Chromium for the dashboard's tests, driven through chromedriver (WebDriver)
//! with fantoccini. `cargo xtask test` installs Debian's `chromium` and `chromium-driver` when
//! they are missing; `ZOARK_CHROMIUM` and `ZOARK_CHROMEDRIVER` point elsewhere.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;

/// How long a page may take to show what a test waits for: generous, because CI runs the whole
/// suite on two cores beside the browsers; a wait ends as soon as its condition holds.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One browser session on its own chromedriver and profile; closed (and killed) when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> Self {
        let chromium = program("ZOARK_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("ZOARK_CHROMEDRIVER", "/usr/bin/chromedriver");
        assert!(
            std::path::Path::new(&chromium).exists()
                && std::path::Path::new(&chromedriver).exists(),
            "{chromium} and {chromedriver} are needed: `cargo xtask test` installs Debian's \
             chromium and chromium-driver"
        );
        let port = free_port();
        // Its own process group, so that the browsers it starts die with it (a failed test
        // must not leave Chromium running).
        let driver = Command::new(&chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {chromedriver}: {e}"));
        let profile = std::env::temp_dir().join(format!("zoark-chromium-{}", uuid::Uuid::now_v7()));
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < PATIENCE => {
                    tracing::debug!(error = %e, "chromedriver not ready yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("connecting to chromedriver: {e}"),
            }
        };
        Self {
            client,
            driver,
            profile,
        }
    }

    /// Opens `url` and waits for its document.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element `css` matches, waiting up to [`PATIENCE`] for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, PATIENCE).await;
        self.client.find(Locator::Css(css)).await.unwrap()
    }

    /// Whether `css` matches anything now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// Waits (up to `within`) until `css` matches something, without reloading the page.
    pub async fn wait_for(&self, css: &str, within: Duration) {
        let started = Instant::now();
        while !self.has(css).await {
            if started.elapsed() > within {
                let text = self
                    .eval("return document.body ? document.body.innerText : '';")
                    .await;
                panic!(
                    "{css} did not appear within {within:?} on {}: {text}",
                    self.client.current_url().await.unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks `css` (a link or a button that stays on the page). A live page may swap the
    /// element between finding and clicking it: then it is found again.
    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && started.elapsed() < PATIENCE => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// Clicks `css`, a link or a form's button, and waits for the page it leads to.
    pub async fn follow(&self, css: &str) {
        self.eval("window.zoarkLeaving = true;").await;
        self.click(css).await;
        let started = Instant::now();
        loop {
            let arrived = self
                .eval("return !window.zoarkLeaving && document.readyState === 'complete';")
                .await;
            if arrived == serde_json::Value::Bool(true) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "clicking {css} led nowhere");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a PNG screenshot of the page to `target/dashboard/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let dir = target.join("dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs `script` in the page and returns its (JSON) result.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Runs axe-core (`ZOARK_AXE_JS`, which `cargo xtask test` provisions) on the page and fails
    /// on any serious or critical violation.
    pub async fn assert_accessible(&self, page: &str) {
        let path = std::env::var("ZOARK_AXE_JS")
            .expect("ZOARK_AXE_JS: run the tests with `cargo xtask test`, which installs axe-core");
        let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        self.client.execute(&axe, vec![]).await.unwrap();
        let violations = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                   .then(r => done(r.violations
                     .filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.map(n => n.target) }))))
                   .catch(e => done('axe failed: ' + e));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            violations,
            serde_json::json!([]),
            "accessibility violations on {page}"
        );
    }

    /// Ends the WebDriver session, then the driver and whatever it started (on drop).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
