//! The identity domain's input types, each with one fallible constructor: what reaches the
//! database has been parsed, never merely checked.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// Why an input was refused, in words meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// An email address: trimmed, at most 320 characters, one `@` with something on both sides and
/// a dot in the domain, no whitespace. Compared case-insensitively by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// # Errors
    /// When the text is not an email address.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim();
        let (local, domain) = email
            .split_once('@')
            .ok_or_else(|| invalid("is not an email address (no `@`)"))?;
        if email.len() > 320 {
            return Err(invalid("is longer than 320 characters"));
        }
        if local.is_empty()
            || domain.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("is not an email address"));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name (a person's or an organization's): trimmed, 1 to 200 characters, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// # Errors
    /// When empty, too long or containing control characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if name.chars().count() > 200 {
            return Err(invalid("is longer than 200 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest: hashing is deliberately slow, so unbounded input would be a denial of service.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A new password: at least 12 characters, at most 1 KiB, and not guessable — zxcvbn's
/// dictionaries of common passwords, names and words, keyboard patterns and sequences, plus the
/// account's own email, name and organization, must put it at 10^8 guesses or more (score 3).
pub struct NewPassword(SecretString);

impl NewPassword {
    /// # Errors
    /// When too short, too long, or too easy to guess.
    pub fn parse(raw: &str, context: &[&str]) -> Result<Self, Invalid> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err(invalid(format!(
                "must be at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err(invalid(format!(
                "must be at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        // The account's own words (from its email, names) count as the easiest guesses.
        let words: Vec<String> = context
            .iter()
            .flat_map(|c| c.split(|ch: char| !ch.is_alphanumeric()))
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_lowercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let estimate = zxcvbn::zxcvbn(raw, &words);
        if estimate.score() < zxcvbn::Score::Three {
            let why = estimate
                .feedback()
                .and_then(|f| f.warning())
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            return Err(invalid(format!(
                "is too easy to guess{why}. Use a longer phrase of unrelated words"
            )));
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_trimmed_and_malformed_ones_refused() {
        assert_eq!(
            EmailAddress::parse("  ada@example.com ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@@example.com",
            "ada@.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_non_empty_and_bounded() {
        assert_eq!(Name::parse(" Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(201)).is_err());
        assert!(Name::parse("a\u{0}b").is_err());
    }

    #[test]
    fn passwords_must_be_long_and_not_common_or_personal() {
        assert!(NewPassword::parse("correct horse battery staple", &[]).is_ok());
        let short = NewPassword::parse("Tr0ub4dor&3", &[]).unwrap_err();
        assert!(short.0.contains("at least 12"), "{short}");
        for common in [
            "password1234",
            "123456789012",
            "qwertyuiop123",
            "iloveyou1234",
        ] {
            let err = NewPassword::parse(common, &[]).unwrap_err();
            assert!(err.0.contains("too easy to guess"), "{common}: {err}");
        }
        // Strong alone, weak for the account it belongs to.
        assert!(NewPassword::parse("zygmuntquokka", &[]).is_ok());
        assert!(
            NewPassword::parse("zygmuntquokka", &["zygmunt@example.com", "Quokka Ltd"]).is_err()
        );
        assert!(NewPassword::parse(&"x".repeat(MAX_PASSWORD_BYTES + 1), &[]).is_err());
        assert!(
            !format!(
                "{:?}",
                NewPassword::parse("correct horse battery staple", &[]).unwrap()
            )
            .contains("horse")
        );
    }
}
