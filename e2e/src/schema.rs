//! Validation of an object against a CRD's structural `openAPIV3Schema`, strict about unknown
//! fields (an API server older than 1.25 silently prunes them, which hides typos in examples).

use serde_json::Value;

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// Appends one message per violation, each prefixed with the JSON path.
pub fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            errs.push(format!("{path}: null not allowed"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(format!("{path}: expected int or string"));
        }
        return;
    }
    if let Some(t) = schema["type"].as_str() {
        if !type_ok(t, v) {
            errs.push(format!("{path}: expected {t}, got {v}"));
            return;
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            errs.push(format!(
                "{path}: {v} not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            errs.push(format!("{path}: {n} < minimum {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema["maximum"].as_f64(), v.as_f64()) {
        if n > max {
            errs.push(format!("{path}: {n} > maximum {max}"));
        }
    }
    if let (Some(min), Some(s)) = (schema["minLength"].as_u64(), v.as_str()) {
        if (s.chars().count() as u64) < min {
            errs.push(format!("{path}: shorter than {min}"));
        }
    }
    if let Some(arr) = v.as_array() {
        if let Some(min) = schema["minItems"].as_u64() {
            if (arr.len() as u64) < min {
                errs.push(format!("{path}: fewer than {min} items"));
            }
        }
        for (i, item) in arr.iter().enumerate() {
            validate(&schema["items"], item, &format!("{path}[{i}]"), errs);
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                errs.push(format!("{path}: missing required field {r:?}"));
            }
        }
        let props = schema["properties"].as_object();
        let extra = &schema["additionalProperties"];
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
        for (k, val) in obj {
            let p = format!("{path}.{k}");
            if let Some(s) = props.and_then(|m| m.get(k)) {
                validate(s, val, &p, errs);
            } else if extra.is_object() {
                validate(extra, val, &p, errs);
            } else if extra == &Value::Bool(true) || preserve {
            } else if props.is_some() || extra == &Value::Bool(false) {
                errs.push(format!("{p}: unknown field"));
            }
        }
    }
}

/// The served version's schema of the CRD for `apiVersion`/`kind`, if any.
pub fn crd_schema<'a>(crds: &'a [Value], api_version: &str, kind: &str) -> Option<&'a Value> {
    let (group, version) = api_version.split_once('/')?;
    crds.iter()
        .filter(|c| c["spec"]["group"] == group && c["spec"]["names"]["kind"] == kind)
        .flat_map(|c| {
            c["spec"]["versions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |v| (c, v))
        })
        .find(|(_, v)| v["name"] == version)
        .map(|(c, _)| {
            let vs = c["spec"]["versions"].as_array().unwrap();
            let i = vs.iter().position(|v| v["name"] == version).unwrap();
            &c["spec"]["versions"][i]["schema"]["openAPIV3Schema"]
        })
}

/// Every field path under `.spec` of a schema, e.g. `spec.upstream.hubRef.name`. Paths stop at
/// embedded Kubernetes types (resources, tolerations, affinity) and at free-form maps.
pub fn spec_paths(schema: &Value) -> Vec<String> {
    fn walk(s: &Value, path: String, out: &mut Vec<String>) {
        let s = if s["type"] == "array" { &s["items"] } else { s };
        if let Some(props) = s["properties"].as_object() {
            for (k, v) in props {
                let p = format!("{path}.{k}");
                out.push(p.clone());
                // Embedded core types (documented by Kubernetes) are not walked.
                if ![
                    "resources",
                    "tolerations",
                    "affinity",
                    "topologySpreadConstraints",
                ]
                .contains(&k.as_str())
                {
                    walk(v, p, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&schema["properties"]["spec"], "spec".into(), &mut out);
    out
}
