//! Selectors the scheduler evaluates: `metav1.LabelSelector` (topology spread) and
//! `v1.NodeSelectorTerm` (node affinity), parsed once per pod so the per-node checks are plain
//! comparisons.

use std::collections::BTreeMap;

use serde_json::Value;

/// Object labels.
pub type Labels = BTreeMap<String, String>;

/// Reads `metadata.labels`-style objects; non-string values are skipped.
pub fn labels_from(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum LabelOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed `metav1.LabelSelector`. A null selector matches nothing, an empty one everything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    nothing: bool,
    requirements: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    pub fn everything() -> Self {
        LabelSelector { nothing: false, requirements: Vec::new() }
    }

    pub fn nothing() -> Self {
        LabelSelector { nothing: true, requirements: Vec::new() }
    }

    /// Parses a `LabelSelector` object; `None`/`null` gives [`LabelSelector::nothing`].
    pub fn from_json(v: Option<&Value>) -> Result<Self, String> {
        let Some(obj) = v.and_then(Value::as_object) else { return Ok(Self::nothing()) };
        let mut sel = Self::everything();
        if let Some(Value::Object(m)) = obj.get("matchLabels") {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| format!("matchLabels[{k}] is not a string"))?;
                sel.requirements.push((k.clone(), LabelOp::In(vec![v.to_string()])));
            }
        }
        for expr in obj.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values = strings(expr.get("values"));
            let op = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" if !values.is_empty() => LabelOp::In(values),
                "NotIn" if !values.is_empty() => LabelOp::NotIn(values),
                "Exists" if values.is_empty() => LabelOp::Exists,
                "DoesNotExist" if values.is_empty() => LabelOp::DoesNotExist,
                op => return Err(format!("invalid label selector requirement on {key:?}: operator {op:?}")),
            };
            sel.requirements.push((key, op));
        }
        Ok(sel)
    }

    /// Adds `key=value` (how `matchLabelKeys` narrows a spread selector); a null selector
    /// becomes one that requires just that, as Kubernetes merges label sets into it.
    pub fn require(&mut self, key: &str, value: &str) {
        self.nothing = false;
        self.requirements.push((key.to_string(), LabelOp::In(vec![value.to_string()])));
    }

    /// True when the selector has a requirement on `key`.
    pub fn constrains(&self, key: &str) -> bool {
        self.requirements.iter().any(|(k, _)| k == key)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing
            && self.requirements.iter().all(|(key, op)| match op {
                LabelOp::In(vs) => labels.get(key).is_some_and(|v| vs.contains(v)),
                LabelOp::NotIn(vs) => labels.get(key).is_none_or(|v| !vs.contains(v)),
                LabelOp::Exists => labels.contains_key(key),
                LabelOp::DoesNotExist => !labels.contains_key(key),
            })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// A parsed `NodeSelectorTerm`: its label expressions and `metadata.name` field expressions
/// are ANDed. An empty term, or one with an invalid requirement, matches no node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    valid: bool,
    labels: Vec<(String, NodeOp)>,
    /// (field key, value, negated): `In` is equality, `NotIn` inequality.
    fields: Vec<(String, String, bool)>,
}

impl NodeSelectorTerm {
    pub fn from_json(term: &Value) -> Self {
        let mut t = NodeSelectorTerm { valid: true, labels: Vec::new(), fields: Vec::new() };
        for expr in term.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values = strings(expr.get("values"));
            let single_int = || if values.len() == 1 { values[0].parse::<i64>().ok() } else { None };
            let op = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" if !values.is_empty() => Some(NodeOp::In(values.clone())),
                "NotIn" if !values.is_empty() => Some(NodeOp::NotIn(values.clone())),
                "Exists" if values.is_empty() => Some(NodeOp::Exists),
                "DoesNotExist" if values.is_empty() => Some(NodeOp::DoesNotExist),
                "Gt" => single_int().map(NodeOp::Gt),
                "Lt" => single_int().map(NodeOp::Lt),
                _ => None,
            };
            match op {
                Some(op) => t.labels.push((key, op)),
                None => t.valid = false,
            }
        }
        for expr in term.get("matchFields").and_then(Value::as_array).into_iter().flatten() {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
            let values = strings(expr.get("values"));
            let negated = match expr.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => false,
                "NotIn" => true,
                _ => {
                    t.valid = false;
                    continue;
                }
            };
            if values.len() != 1 {
                t.valid = false;
                continue;
            }
            t.fields.push((key, values[0].clone(), negated));
        }
        t
    }

    /// The node names this term pins the pod to through `metadata.name In`, if any
    /// (intersection of its `In` field requirements).
    pub fn pinned_node_names(&self) -> Option<Vec<&str>> {
        let mut names: Option<Vec<&str>> = None;
        for (key, value, negated) in &self.fields {
            if key == "metadata.name" && !negated {
                names = Some(match names {
                    None => vec![value.as_str()],
                    Some(prev) => prev.into_iter().filter(|n| *n == value).collect(),
                });
            }
        }
        names
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if !self.valid || (self.labels.is_empty() && self.fields.is_empty()) {
            return false;
        }
        let labels_ok = self.labels.iter().all(|(key, op)| match op {
            NodeOp::In(vs) => labels.get(key).is_some_and(|v| vs.contains(v)),
            NodeOp::NotIn(vs) => labels.get(key).is_none_or(|v| !vs.contains(v)),
            NodeOp::Exists => labels.contains_key(key),
            NodeOp::DoesNotExist => !labels.contains_key(key),
            NodeOp::Gt(n) => labels.get(key).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            NodeOp::Lt(n) => labels.get(key).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        });
        labels_ok
            && self.fields.iter().all(|(key, value, negated)| {
                let field = if key == "metadata.name" { node_name } else { "" };
                (field == value) != *negated
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_null_empty_and_expressions() {
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert!(!LabelSelector::from_json(None).expect("null").matches(&l));
        assert!(LabelSelector::from_json(Some(&json!({}))).expect("empty").matches(&l));
        let s = LabelSelector::from_json(Some(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["be"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        })))
        .expect("valid");
        assert!(s.matches(&l));
        assert!(!s.matches(&labels(&[("app", "web"), ("canary", "1")])));
        assert!(
            LabelSelector::from_json(Some(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]}))).is_err()
        );
    }

    #[test]
    fn node_selector_term_operators() {
        let node = labels(&[("zone", "a"), ("cores", "16")]);
        let t = |v: serde_json::Value| NodeSelectorTerm::from_json(&v);
        assert!(
            t(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]})).matches("n", &node)
        );
        assert!(
            !t(json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]})).matches("n", &node)
        );
        assert!(
            !t(json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["1"]}]})).matches("n", &node)
        );
        assert!(
            !t(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["x"]}]})).matches("n", &node)
        );
        assert!(
            t(json!({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["t4"]}]})).matches("n", &node)
        );
        assert!(!t(json!({})).matches("n", &node), "an empty term matches nothing");
        let f = t(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}));
        assert!(f.matches("n", &node));
        assert!(!f.matches("m", &node));
        assert_eq!(f.pinned_node_names(), Some(vec!["n"]));
        assert!(!t(json!({"matchFields": [{"key": "metadata.name", "operator": "Exists"}]})).matches("n", &node));
    }
}
