//! Content negotiation: what the client sent (`Content-Type`) and what it accepts (`Accept`).

use bytes::Bytes;
use serde_json::Value;

use super::errors::ApiError;

/// Largest request body accepted, as kube-apiserver: 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a response body should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Protobuf,
    /// `meta.k8s.io/v1` Table (JSON).
    Table,
    /// `meta.k8s.io/v1` PartialObjectMetadata(List) (JSON).
    PartialMetadata,
}

/// One entry of an Accept header.
#[derive(Debug)]
struct MediaRange<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

fn parse_accept(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';').map(str::trim);
            let essence = it.next().unwrap_or("");
            let params = it.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect();
            MediaRange { essence, params }
        })
        .collect()
}

/// Picks the response format from an Accept header. `table_ok`: the request may be answered with
/// a Table (gets and lists of resources).
pub fn output(accept: Option<&str>, table_ok: bool) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Ok(Output::Json) };
    let ranges = parse_accept(accept);
    // JSON is what the server speaks natively: clients that list it (client-go lists protobuf
    // first, then JSON) get JSON; protobuf is for clients that accept nothing else.
    let json_ok =
        ranges.iter().any(|m| m.params.is_empty() && matches!(m.essence, "application/json" | "*/*" | "application/*"));
    for m in ranges {
        let param = |k: &str| m.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match param("as") {
            Some("Table") => {
                if table_ok && param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1") | Some("v1beta1")) {
                    return Ok(Output::Table);
                }
                continue;
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList") => {
                if param("g") == Some("meta.k8s.io") && param("v") == Some("v1") {
                    return Ok(Output::PartialMetadata);
                }
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        match m.essence {
            "application/json" | "application/*" | "*/*" | "application/json-patch+json" => return Ok(Output::Json),
            "application/yaml" => return Ok(Output::Yaml),
            "application/vnd.kubernetes.protobuf" if !json_ok => return Ok(Output::Protobuf),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf (asked for {accept:?})"
    )))
}

/// The media type of a request body, without parameters.
pub fn essence(content_type: Option<&str>) -> &str {
    content_type.and_then(|ct| ct.split(';').next()).map(str::trim).unwrap_or("application/json")
}

/// Decodes an object body according to its content type.
pub fn decode_body(content_type: Option<&str>, body: &Bytes) -> Result<Value, ApiError> {
    match essence(content_type) {
        "application/json" | "" => decode_json(body),
        "application/yaml" | "application/apply-patch+yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => decode_protobuf(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body must be a JSON object",
        ));
    }
    Ok(v)
}

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("error converting YAML to JSON: the body must be a mapping"));
    }
    Ok(v)
}

fn decode_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    crate::protobuf::decode(body)
        .map(|d| d.object)
        .map_err(|e| ApiError::bad_request(format!("failed to decode protobuf body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_accept_header_picks_table() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(Some(a), true).expect("ok"), Output::Table);
        assert_eq!(output(Some(a), false).expect("ok"), Output::Json);
        assert_eq!(output(None, true).expect("ok"), Output::Json);
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf, application/json"), true).expect("ok"),
            Output::Json
        );
        assert_eq!(output(Some("application/vnd.kubernetes.protobuf"), true).expect("ok"), Output::Protobuf);
        assert!(output(Some("text/html"), true).is_err());
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        assert_eq!(decode_json(b"{").expect_err("malformed").code, 400);
        assert_eq!(decode_json(b"[1]").expect_err("not an object").code, 400);
        assert_eq!(decode_yaml(b"a: [").expect_err("malformed").code, 400);
        let e = decode_body(Some("text/plain"), &Bytes::from_static(b"x")).expect_err("unsupported");
        assert_eq!(e.code, 415);
    }
}
