//! What the dashboard's browser tests need: Debian's `chromium`, `chromium-driver` and
//! `fonts-liberation` (installed with apt when missing and possible) and axe-core from npm (pinned, in `.zoark/tools/axe`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::postgres::{apt_available, apt_install};

/// axe-core, the accessibility checker the tests run in the browser on every page.
const AXE_CORE: &str = "axe-core@4.14.1";

pub struct BrowserTools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
    /// `axe.min.js`.
    pub axe: PathBuf,
}

/// Installs what is missing and says where everything is.
pub fn ensure(root: &Path) -> Result<BrowserTools> {
    let chromium = PathBuf::from("/usr/bin/chromium");
    let chromedriver = PathBuf::from("/usr/bin/chromedriver");
    // Without a font (Chromium only recommends one) pages render without text.
    let fonts = Path::new("/usr/share/fonts/truetype/liberation");
    if !(chromium.exists() && chromedriver.exists() && fonts.exists()) {
        if !apt_available() {
            bail!(
                "the dashboard's tests need Chromium and its WebDriver: install Debian's \
                 `chromium` and `chromium-driver` (as root, `cargo xtask test` does it)"
            );
        }
        apt_install(&["chromium", "chromium-driver", "fonts-liberation"])?;
    }
    let dir = root.join(".zoark/tools/axe");
    let axe = dir.join("node_modules/axe-core/axe.min.js");
    let (_, version) = AXE_CORE.rsplit_once('@').unwrap_or((AXE_CORE, ""));
    let installed = std::fs::read_to_string(dir.join("node_modules/axe-core/package.json"))
        .unwrap_or_default()
        .contains(&format!("\"version\": \"{version}\""));
    if !(installed && axe.exists()) {
        std::fs::create_dir_all(&dir).context("creating .zoark/tools/axe")?;
        crate::process::npm_install(&dir, &[AXE_CORE])?;
        if !axe.exists() {
            bail!("npm install {AXE_CORE} left no {}", axe.display());
        }
    }
    Ok(BrowserTools {
        chromium,
        chromedriver,
        axe,
    })
}
