//! Credentials for the store: an AWS shared-credentials file (profile `default`, e.g. a mounted
//! Kubernetes Secret) or the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment variables.

use std::path::Path;

use super::ObjStoreError;

/// An access key pair (and optional session token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Parses the `[default]` profile of an AWS shared-credentials INI text.
pub fn parse_shared(text: &str) -> Option<Credentials> {
    let (mut in_default, mut id, mut secret, mut token) = (false, None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_default = section.trim() == "default";
            continue;
        }
        if !in_default {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            _ => {}
        }
    }
    Some(Credentials {
        access_key_id: id?,
        secret_access_key: secret?,
        session_token: token,
    })
}

/// Reads the credentials from `file` when given, else from the environment; `None` when neither
/// has them (the client then tries the SDK's other sources, e.g. instance metadata).
pub fn load(file: &str) -> Result<Option<Credentials>, ObjStoreError> {
    if !file.trim().is_empty() {
        let path = Path::new(file.trim());
        let text = std::fs::read_to_string(path).map_err(|e| {
            ObjStoreError::Config(format!("credentials file {}: {e}", path.display()))
        })?;
        return parse_shared(&text).map(Some).ok_or_else(|| {
            ObjStoreError::Config(format!(
                "credentials file {}: no [default] profile with aws_access_key_id and aws_secret_access_key",
                path.display()
            ))
        });
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(
        match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Some(Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN"),
            }),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_default_profile_only() {
        let text = "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n\n# c\n[default]\n\
                    aws_access_key_id=AK\naws_secret_access_key = SK \n";
        let c = parse_shared(text).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("AK", "SK")
        );
        assert_eq!(c.session_token, None);
        assert!(
            parse_shared("[other]\naws_access_key_id = X\naws_secret_access_key = Y\n").is_none()
        );
        assert!(!format!("{c:?}").contains("SK"));
    }
}
