//! Resource arithmetic for the scheduler: a small quantity parser (cpu in milli-units, everything
//! else in whole units rounded up, as `Quantity.MilliValue`/`Value` do), the `Resources` vector
//! kept per node and per pod, and the pod request rules (sum of containers, max with init
//! containers, restartable init containers as sidecars, pod-level requests, overhead, and the
//! 100m / 200Mi defaults used for scoring containers that request nothing).

use serde_json::{Map, Value};

/// CPU the scorer assumes for a container that does not request any (milli-cores).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory the scorer assumes for a container that does not request any (bytes).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

const NANO: i128 = 1_000_000_000;

/// Parses a quantity into nano-units; `None` when it is not a valid quantity or overflows.
pub fn parse_nanos(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = body.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = body.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let mut mantissa: i128 = 0;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    // value = mantissa / 10^frac_len × factor; factor is either 2^k or 10^e.
    let frac_len = i32::try_from(frac_part.len()).ok()?;
    let (binary_shift, exp10) = match suffix {
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let rest = other.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, rest.parse::<i32>().ok()?)
        }
    };
    let numerator = mantissa.checked_mul(1i128.checked_shl(binary_shift)?)?;
    // Nano-units: shift the decimal exponent by 9.
    let scale = exp10.checked_add(9)?.checked_sub(frac_len)?;
    let nanos = if scale >= 0 {
        numerator.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        match 10i128.checked_pow(scale.unsigned_abs()) {
            Some(d) => ceil_div(numerator, d),
            None => i128::from(numerator != 0),
        }
    };
    Some(if negative { -nanos } else { nanos })
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 { q + 1 } else { q }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// A quantity in milli-units, rounded up; JSON numbers (`cpu: 1`) are accepted.
pub fn milli_value(v: &Value) -> Option<i64> {
    nanos_of(v).map(|n| saturate(ceil_div(n, 1_000_000)))
}

/// A quantity in whole units, rounded up.
pub fn value(v: &Value) -> Option<i64> {
    nanos_of(v).map(|n| saturate(ceil_div(n, NANO)))
}

fn nanos_of(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_nanos(s),
        Value::Number(n) => parse_nanos(&n.to_string()),
        _ => None,
    }
}

/// Resource names the scheduler accounts as "scalar": extended resources (`vendor.io/x`),
/// prefixed native resources, `hugepages-*` and `attachable-volumes-*`.
pub fn is_scalar_resource(name: &str) -> bool {
    name.contains('/') || name.starts_with("hugepages-") || name.starts_with("attachable-volumes-")
}

/// A resource vector: cpu in milli-cores, memory and ephemeral storage in bytes, pod slots
/// (only meaningful for allocatable), and scalar resources sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Builds from a `ResourceList` object; unparseable quantities are ignored.
    pub fn from_list(list: Option<&Value>) -> Self {
        let mut r = Resources::default();
        if let Some(Value::Object(map)) = list {
            r.add_list(map);
        }
        r
    }

    fn add_list(&mut self, map: &Map<String, Value>) {
        for (name, q) in map {
            match name.as_str() {
                "cpu" => self.milli_cpu += milli_value(q).unwrap_or(0),
                "memory" => self.memory += value(q).unwrap_or(0),
                "ephemeral-storage" => self.ephemeral_storage += value(q).unwrap_or(0),
                "pods" => self.pods += value(q).unwrap_or(0),
                other if is_scalar_resource(other) => self.add_scalar(other, value(q).unwrap_or(0)),
                _ => {}
            }
        }
    }

    /// The amount of a scalar resource (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    pub fn add_scalar(&mut self, name: &str, amount: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 += amount,
            Err(i) => self.scalar.insert(i, (name.to_string(), amount)),
        }
    }

    fn max_scalar(&mut self, name: &str, amount: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 = self.scalar[i].1.max(amount),
            Err(i) => self.scalar.insert(i, (name.to_string(), amount)),
        }
    }

    /// Adds `other` (pods included).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (name, v) in &other.scalar {
            self.add_scalar(name, *v);
        }
    }

    /// Subtracts `other`; scalar entries that reach zero are kept (harmless, and cheap).
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (name, v) in &other.scalar {
            self.add_scalar(name, -*v);
        }
    }

    fn set_max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            self.max_scalar(name, *v);
        }
    }

    /// True when nothing (cpu, memory, ephemeral storage, scalars) is requested.
    pub fn is_empty_request(&self) -> bool {
        self.milli_cpu == 0 && self.memory == 0 && self.ephemeral_storage == 0 && self.scalar.is_empty()
    }
}

/// A `ResourceList` together with which of cpu/memory were present as keys: the scoring
/// defaults apply to *missing* keys only, an explicit `0` stays zero.
#[derive(Clone, Debug, Default)]
struct Keyed {
    res: Resources,
    has_cpu: bool,
    has_memory: bool,
}

impl Keyed {
    fn from_list(list: Option<&Value>) -> Self {
        let map = list.and_then(Value::as_object);
        Keyed {
            res: Resources::from_list(list),
            has_cpu: map.is_some_and(|m| m.contains_key("cpu")),
            has_memory: map.is_some_and(|m| m.contains_key("memory")),
        }
    }

    fn with_defaults(&self, cpu: bool, memory: bool) -> Keyed {
        let mut k = self.clone();
        if cpu && !k.has_cpu {
            k.res.milli_cpu += DEFAULT_MILLI_CPU_REQUEST;
            k.has_cpu = true;
        }
        if memory && !k.has_memory {
            k.res.memory += DEFAULT_MEMORY_REQUEST;
            k.has_memory = true;
        }
        k
    }

    fn add(&mut self, other: &Keyed) {
        self.res.add(&other.res);
        self.has_cpu |= other.has_cpu;
        self.has_memory |= other.has_memory;
    }

    fn set_max(&mut self, other: &Keyed) {
        self.res.set_max(&other.res);
        self.has_cpu |= other.has_cpu;
        self.has_memory |= other.has_memory;
    }
}

/// What a pod asks of a node: `requests` for the fit filter and for accounting, `non_zero_*`
/// (requests with per-container defaults) for the least-allocated score.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRequests {
    pub requests: Resources,
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
}

/// Computes a pod's requests from its `spec` (Kubernetes `resourcehelper.PodRequests`).
pub fn pod_requests(spec: &Value) -> PodRequests {
    let containers: Vec<Keyed> =
        list(spec, "containers").map(|c| Keyed::from_list(c.pointer("/resources/requests"))).collect();
    let inits: Vec<(Keyed, bool)> = list(spec, "initContainers")
        .map(|c| {
            let restartable = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
            (Keyed::from_list(c.pointer("/resources/requests")), restartable)
        })
        .collect();
    let pod_level = spec.pointer("/resources/requests").and_then(Value::as_object);
    let pod_cpu = pod_level.and_then(|m| m.get("cpu")).and_then(milli_value);
    let pod_memory = pod_level.and_then(|m| m.get("memory")).and_then(value);
    let overhead = Resources::from_list(spec.get("overhead"));

    let finish = |mut agg: Keyed| {
        if let Some(cpu) = pod_cpu {
            agg.res.milli_cpu = cpu;
            agg.has_cpu = true;
        }
        if let Some(mem) = pod_memory {
            agg.res.memory = mem;
            agg.has_memory = true;
        }
        agg.res.add(&overhead);
        agg
    };
    let requests = finish(aggregate(&containers, &inits, false, false));
    let (default_cpu, default_memory) = if pod_cpu.is_some() || pod_memory.is_some() {
        // With pod-level resources, defaults only fill what neither level requested.
        (!requests.has_cpu, !requests.has_memory)
    } else {
        (true, true)
    };
    let non_zero = finish(aggregate(&containers, &inits, default_cpu, default_memory));
    PodRequests {
        requests: requests.res,
        non_zero_milli_cpu: non_zero.res.milli_cpu,
        non_zero_memory: non_zero.res.memory,
    }
}

fn list<'a>(spec: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    spec.get(field).and_then(Value::as_array).into_iter().flatten()
}

/// Sum of containers, then max with each init container's footprint, where restartable init
/// containers (sidecars) keep running: they add to the sum and to every later init container.
fn aggregate(containers: &[Keyed], inits: &[(Keyed, bool)], default_cpu: bool, default_memory: bool) -> Keyed {
    let mut total = Keyed::default();
    for c in containers {
        total.add(&c.with_defaults(default_cpu, default_memory));
    }
    let mut sidecars = Keyed::default();
    let mut init_max = Keyed::default();
    for (c, restartable) in inits {
        let c = c.with_defaults(default_cpu, default_memory);
        let footprint = if *restartable {
            total.add(&c);
            sidecars.add(&c);
            sidecars.clone()
        } else {
            let mut f = c;
            f.add(&sidecars);
            f
        };
        init_max.set_max(&footprint);
    }
    total.set_max(&init_max);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_round_up_like_kubernetes() {
        assert_eq!(milli_value(&json!("500m")), Some(500));
        assert_eq!(milli_value(&json!("1")), Some(1000));
        assert_eq!(milli_value(&json!(2)), Some(2000));
        assert_eq!(milli_value(&json!("0.1")), Some(100));
        assert_eq!(milli_value(&json!("100u")), Some(1), "sub-milli rounds up");
        assert_eq!(value(&json!("1Gi")), Some(1 << 30));
        assert_eq!(value(&json!("1.5Gi")), Some(3 << 29));
        assert_eq!(value(&json!("128974848")), Some(128_974_848));
        assert_eq!(value(&json!("129e6")), Some(129_000_000));
        assert_eq!(value(&json!("1M")), Some(1_000_000));
        assert_eq!(value(&json!("500m")), Some(1), "fractions round up to whole units");
        assert_eq!(value(&json!("1E")), Some(1_000_000_000_000_000_000));
        assert_eq!(value(&json!("abc")), None);
        assert_eq!(value(&json!("1Zi")), None);
        assert_eq!(value(&json!("1e")), None);
        assert_eq!(value(&json!("..1")), None);
    }

    #[test]
    fn pod_requests_follow_init_container_and_overhead_rules() {
        let spec = json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "2", "memory": "3G"}}}
            ],
            "containers": [
                {"name": "c1", "resources": {"requests": {"cpu": "2", "memory": "1G", "example.com/gpu": "1"}}},
                {"name": "c2", "resources": {"requests": {"cpu": "1", "memory": "1G"}}}
            ],
            "overhead": {"cpu": "250m"}
        });
        let r = pod_requests(&spec);
        assert_eq!(r.requests.milli_cpu, 3250);
        assert_eq!(r.requests.memory, 3_000_000_000);
        assert_eq!(r.requests.scalar("example.com/gpu"), 1);
        assert_eq!(r.non_zero_milli_cpu, 3250);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let spec = json!({
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "setup", "resources": {"requests": {"cpu": "2"}}}
            ],
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]
        });
        // max(1 + 0.5, 2 + 0.5) = 2.5
        assert_eq!(pod_requests(&spec).requests.milli_cpu, 2500);
    }

    #[test]
    fn non_zero_defaults_apply_to_missing_keys_only() {
        let spec = json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "0", "memory": "64Mi"}}}
        ]});
        let r = pod_requests(&spec);
        assert_eq!((r.requests.milli_cpu, r.requests.memory), (0, 64 * 1024 * 1024));
        assert_eq!(r.non_zero_milli_cpu, DEFAULT_MILLI_CPU_REQUEST);
        assert_eq!(r.non_zero_memory, DEFAULT_MEMORY_REQUEST + 64 * 1024 * 1024);
    }

    #[test]
    fn pod_level_requests_override_containers() {
        let spec = json!({
            "resources": {"requests": {"cpu": "4"}},
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]
        });
        let r = pod_requests(&spec);
        assert_eq!(r.requests.milli_cpu, 4000);
        assert_eq!(r.non_zero_milli_cpu, 4000);
        assert_eq!(r.non_zero_memory, DEFAULT_MEMORY_REQUEST);
    }
}
