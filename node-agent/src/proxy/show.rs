//! Text for `node-agent lb list` and `node-agent lb stats`: what the pinned maps hold, in the
//! shape of `cilium service list` (one backend per line, numbered by slot from 1).

use std::fmt::Write as _;

use crate::datapath::Service;

/// The services as a table: `ID  FRONTEND  BACKENDS`, each backend on its own line as
/// `N => ADDR:PORT/PROTO`; a frontend with a Maglev table is marked `(maglev)`. `services` are
/// (datapath service id, service) in display order.
pub fn service_list(services: &[(u32, Service)]) -> String {
    let ids: Vec<String> = services.iter().map(|(id, _)| id.to_string()).collect();
    let frontends: Vec<String> =
        services.iter().map(|(_, s)| if s.maglev { format!("{s} (maglev)") } else { s.to_string() }).collect();
    let id_width = ids.iter().map(String::len).chain([2]).max().unwrap_or(2) + 3;
    let frontend_width = frontends.iter().map(String::len).chain(["FRONTEND".len()]).max().unwrap_or(8) + 3;
    let mut out = String::new();
    let _ = writeln!(out, "{:id_width$}{:frontend_width$}BACKENDS", "ID", "FRONTEND");
    for (((_, service), id), frontend) in services.iter().zip(&ids).zip(&frontends) {
        if service.backends.is_empty() {
            let _ = writeln!(out, "{id:id_width$}{frontend:frontend_width$}(no backends)");
            continue;
        }
        for (slot, backend) in service.backends.iter().enumerate() {
            let (id, frontend) = if slot == 0 { (id.as_str(), frontend.as_str()) } else { ("", "") };
            let _ =
                writeln!(out, "{id:id_width$}{frontend:frontend_width$}{} => {backend}/{}", slot + 1, service.proto);
        }
    }
    out
}

/// The counters as `NAME  VALUE` lines, values right-aligned.
pub fn counter_list<'a>(counters: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let counters: Vec<(&str, String)> = counters.into_iter().map(|(name, value)| (name, value.to_string())).collect();
    let name_width = counters.iter().map(|(name, _)| name.len()).chain(["NAME".len()]).max().unwrap_or(4) + 3;
    let value_width = counters.iter().map(|(_, value)| value.len()).chain(["VALUE".len()]).max().unwrap_or(5);
    let mut out = String::new();
    let _ = writeln!(out, "{:name_width$}{:>value_width$}", "NAME", "VALUE");
    for (name, value) in counters {
        let _ = writeln!(out, "{name:name_width$}{value:>value_width$}");
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::datapath::Protocol;

    use super::*;

    #[test]
    fn services_list_one_backend_per_line() {
        let services = vec![
            (
                7,
                Service {
                    vip: "10.96.0.10".parse().expect("vip"),
                    port: 53,
                    proto: Protocol::Udp,
                    backends: vec!["10.244.1.5:5353".parse().expect("addr"), "10.244.2.7:5353".parse().expect("addr")],
                    affinity: None,
                    maglev: false,
                },
            ),
            (
                12,
                Service {
                    vip: "10.96.100.200".parse().expect("vip"),
                    port: 8080,
                    proto: Protocol::Tcp,
                    backends: vec![],
                    affinity: None,
                    maglev: false,
                },
            ),
            (
                13,
                Service {
                    vip: "192.168.77.1".parse().expect("vip"),
                    port: 30080,
                    proto: Protocol::Tcp,
                    backends: vec!["10.244.1.5:8080".parse().expect("addr")],
                    affinity: None,
                    maglev: true,
                },
            ),
        ];
        let expected = "\
ID   FRONTEND                          BACKENDS
7    10.96.0.10:53/UDP                 1 => 10.244.1.5:5353/UDP
                                       2 => 10.244.2.7:5353/UDP
12   10.96.100.200:8080/TCP            (no backends)
13   192.168.77.1:30080/TCP (maglev)   1 => 10.244.1.5:8080/TCP
";
        assert_eq!(service_list(&services), expected);
        assert_eq!(service_list(&[]), "ID   FRONTEND   BACKENDS\n");
    }

    #[test]
    fn counters_are_aligned() {
        let text = counter_list([("connect", 12), ("rev_nat_update_failed", 0), ("no_backend", 123456)]);
        let expected = "\
NAME                     VALUE
connect                     12
rev_nat_update_failed        0
no_backend              123456
";
        assert_eq!(text, expected);
    }
}
