//! The dashboard's sign-in over plain HTTP, for the tests and the dashboard benchmark: the
//! hidden CSRF field of a page and the cookies a response sets.

/// The value of the hidden `csrf` input of a page.
pub fn csrf_of(html: &str) -> Option<String> {
    const FIELD: &str = "name=\"csrf\" value=\"";
    let start = html.find(FIELD)? + FIELD.len();
    html[start..].split('"').next().map(str::to_owned)
}

/// `name=value` of the response's `Set-Cookie` for `name`, and the whole header.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    let header = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))?
        .to_owned();
    Some((header.split(';').next()?.to_owned(), header))
}

/// Signs in through the dashboard's form at `base`: the `zoark_session` cookie (`name=value`).
///
/// # Errors
/// A request that fails, or a sign-in that is refused.
pub async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let form = http.get(format!("{base}/dashboard/sign-in")).send().await?;
    let (nonce, _) = set_cookie(&form, "zoark_sign_in").context("no sign-in cookie")?;
    let csrf = csrf_of(&form.text().await?).context("no csrf field")?;
    let response = http
        .post(format!("{base}/dashboard/sign-in"))
        .header(reqwest::header::COOKIE, &nonce)
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == reqwest::StatusCode::SEE_OTHER,
        "sign-in answered {}",
        response.status()
    );
    Ok(set_cookie(&response, "zoark_session")
        .context("no session cookie")?
        .0)
}
