//! `midge`: the operator CLI.
//!
//! ```text
//! midge verify --json <path>     offline verification of a local database (never repairs)
//! ```
//! All JSON goes to stdout. Exit codes: 0 healthy; 1 degraded, salvage or write-stalled; 2 bad usage;
//! 3 inaccessible, missing, transient or fenced; 4 corrupt or incompatible format; 5 internal error.
#![allow(clippy::disallowed_methods)]

use cntryl_midge::{Engine, EngineHealth, MidgeError, Severity};
use serde_json::json;
use std::process::ExitCode;

fn error_json(kind: &str, message: &str) -> serde_json::Value {
    json!({
        "schema_version": 1,
        "verification_scope": "local_path",
        "status": "error",
        "error_kind": kind,
        "message": message,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [cmd, flag, path] if cmd == "verify" && flag == "--json" => path.clone(),
        _ => {
            println!("{}", error_json("usage", "usage: midge verify --json <path>"));
            return ExitCode::from(2);
        }
    };
    if !std::path::Path::new(&path).is_dir() {
        println!("{}", error_json("storage", &format!("{path}: not a directory")));
        return ExitCode::from(3);
    }
    match Engine::verify_path(&path) {
        Ok(report) => {
            let code = match report.health {
                EngineHealth::Healthy => 0,
                EngineHealth::Corrupt => 4,
                _ => 1,
            };
            let mut v =
                serde_json::to_value(&report).unwrap_or_else(|e| error_json("internal", &e.to_string()));
            if let Some(o) = v.as_object_mut() {
                o.insert("schema_version".into(), json!(1));
                o.insert("verification_scope".into(), json!("local_path"));
                o.insert("status".into(), json!(if code == 0 { "ok" } else { "unhealthy" }));
            }
            println!("{v}");
            ExitCode::from(code)
        }
        Err(e) => {
            let (kind, code) = match (&e, e.severity()) {
                (MidgeError::NotFound, _) => ("storage", 3),
                (_, Severity::Fatal) => ("corruption", 4),
                (_, Severity::Defect) => ("internal", 5),
                (_, Severity::Caller) => ("usage", 2),
                _ => ("storage", 3),
            };
            println!("{}", error_json(kind, &e.to_string()));
            ExitCode::from(code)
        }
    }
}
