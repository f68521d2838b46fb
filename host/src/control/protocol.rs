//! The control protocol: one JSON object per line each way. Field names are
//! kebab-case and only ever added to; `schema` in every answer says which
//! version of `docs/control.md` it follows.

use serde::{Deserialize, Serialize};

/// The version of the response schema documented in `docs/control.md`.
pub const SCHEMA_VERSION: u32 = 1;

/// One request, told apart by its `command`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Policies, tunables and overrides.
    Status,
    /// The Prometheus exposition (text format 0.0.4), as `GET /metrics`
    /// serves it: `{"text": "..."}`.
    Metrics,
    /// Policies only.
    PolicyList,
    /// Run a policy that is on offer, until the daemon stops.
    PolicyEnable { name: String },
    /// Stop a policy, until the daemon stops or it is enabled again.
    PolicyDisable { name: String },
    /// The changes in effect (what the exit summary prints).
    Summary,
    /// Restore every value changed.
    Rollback,
    /// Hand a tunable the administrator owns back to the policies: in one
    /// namespace, or (no `netns`) in every one.
    OverrideClear {
        tunable: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
    },
    /// Run a policy file as a shadow beside the live version of its name.
    ShadowStart { file: String },
    /// Stop a shadow started with `shadow-start`.
    ShadowStop { name: String },
    /// Run a policy file as the canary of its name in a scope: namespaces
    /// or peer prefixes; judged as `health` says (defaults when absent).
    CanaryStart {
        file: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        netns: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        prefixes: Vec<String>,
        #[serde(default)]
        health: crate::canary::health::HealthRequest,
    },
    /// Make the canary of `name` its version everywhere.
    CanaryPromote { name: String },
    /// End the canary of `name`, rolling back what it changed.
    CanaryAbort { name: String },
}

impl Request {
    /// Reads one request line as the server does: surrounding whitespace
    /// (the newline included) is ignored; anything else that is not exactly
    /// one request object is an error.
    pub fn from_line(line: &str) -> Result<Request, serde_json::Error> {
        serde_json::from_str(line.trim())
    }
}

/// One answer: `{"ok":true,"schema":1,"result":{...}}` or
/// `{"ok":false,"schema":1,"error":"..."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Response {
    pub ok: bool,
    pub schema: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response { ok: true, schema: SCHEMA_VERSION, result: Some(result), error: None }
    }

    pub fn error(error: impl Into<String>) -> Response {
        Response { ok: false, schema: SCHEMA_VERSION, result: None, error: Some(error.into()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_kebab_case_objects() {
        let line = serde_json::to_string(&Request::PolicyDisable { name: "tcp-buffer".into() }).expect("encode");
        assert_eq!(line, r#"{"command":"policy-disable","name":"tcp-buffer"}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"command":"status"}"#).expect("decode"), Request::Status);
        assert!(serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"policy-enable"}"#).is_err(), "name is required");
        let clear = Request::OverrideClear { tunable: "net.ipv4.tcp_rmem".into(), netns: None };
        assert_eq!(
            serde_json::to_string(&clear).expect("encode"),
            r#"{"command":"override-clear","tunable":"net.ipv4.tcp_rmem"}"#
        );
    }

    #[test]
    fn a_request_line_is_one_object_with_its_newline() {
        assert_eq!(Request::from_line(" {\"command\":\"summary\"}\r\n").expect("decode"), Request::Summary);
        assert!(Request::from_line("{\"command\":\"status\"} {\"command\":\"status\"}").is_err());
        assert!(Request::from_line("").is_err());
    }
}
