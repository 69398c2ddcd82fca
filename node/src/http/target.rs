//! Extractors for what a request targets: the namespace of `/api/v1/{namespace}/...` (503 before
//! recovery, 404 when unknown), optionally the key after the model segment, and `Writable<_>`, which
//! also refuses writes this node may not take (403 on a relayer or a mirrored namespace, naming the owner).
//!
//! Paths are read raw (see `extract::api_path`) so that `%2F` inside a key stays part of the key.

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::extract::{api_path, decode_key, decode_text, ApiPath};
use super::Shared;
use crate::engine::Namespace;

/// The raw path of the request as the client sent it.
fn raw_path(parts: &Parts) -> ApiResult<ApiPath> {
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |u| u.0.path());
    api_path(path)
}

/// Anything that names the namespace it targets (so `Writable` can check it).
pub trait Targets {
    fn target(&self) -> &Target;
}

/// The namespace a request targets.
pub struct Target {
    /// The namespace name, percent-decoded.
    pub name: String,
    pub ns: Namespace,
    /// Raw (still percent-encoded) remainder after the model segment, e.g. the key.
    pub rest: Option<String>,
}

impl Target {
    fn resolve(st: &Shared, p: ApiPath) -> ApiResult<Target> {
        let ns = st.namespace(&p.namespace)?;
        Ok(Target {
            name: p.namespace,
            ns,
            rest: p.rest,
        })
    }
}

impl Targets for Target {
    fn target(&self) -> &Target {
        self
    }
}

impl FromRequestParts<Shared> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> ApiResult<Target> {
        Target::resolve(st, raw_path(parts)?)
    }
}

/// The namespace and the key of `/api/v1/{namespace}/{model}/{key}` (400 for an empty or non-UTF-8
/// key, checked before the namespace).
pub struct TargetKey {
    pub target: Target,
    pub key: Vec<u8>,
}

impl Targets for TargetKey {
    fn target(&self) -> &Target {
        &self.target
    }
}

impl FromRequestParts<Shared> for TargetKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> ApiResult<TargetKey> {
        let p = raw_path(parts)?;
        let key = decode_key(p.rest.as_deref())?;
        Ok(TargetKey {
            target: Target::resolve(st, p)?,
            key,
        })
    }
}

/// The namespace and transaction id of `/api/v1/{namespace}/tx/{txnId}/...`.
pub struct TargetTxn {
    pub target: Target,
    pub id: String,
}

impl Targets for TargetTxn {
    fn target(&self) -> &Target {
        &self.target
    }
}

impl FromRequestParts<Shared> for TargetTxn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> ApiResult<TargetTxn> {
        let p = raw_path(parts)?;
        let rest = p.rest.clone().unwrap_or_default();
        let id_raw = rest.split('/').next().unwrap_or_default();
        let id = decode_text(id_raw, "transaction id")?;
        Ok(TargetTxn {
            target: Target::resolve(st, p)?,
            id,
        })
    }
}

/// A target this node accepts writes for: 403 on a read-only relayer and on a namespace mirrored
/// from another hub (the message names the owning hub).
pub struct Writable<T>(pub T);

impl<T> FromRequestParts<Shared> for Writable<T>
where
    T: FromRequestParts<Shared, Rejection = ApiError> + Targets + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &Shared) -> ApiResult<Writable<T>> {
        let t = T::from_request_parts(parts, st).await?;
        st.writable(&t.target().name)?;
        Ok(Writable(t))
    }
}

/// Guards `POST /{model}/{rest}`: only `/{model}/batch` takes a POST (405 otherwise, before anything else).
pub struct BatchRoute;

impl FromRequestParts<Shared> for BatchRoute {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _st: &Shared) -> ApiResult<BatchRoute> {
        let p = raw_path(parts)?;
        if p.rest.as_deref() == Some("batch") {
            return Ok(BatchRoute);
        }
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST is only allowed on /{}/batch", p.model),
        ))
    }
}
