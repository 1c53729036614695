//! Service ClusterIP and NodePort allocation: unique, in range, released on delete, and the
//! `kubernetes` Service at 10.96.0.1.

mod common;

use common::Cluster;

fn svc(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: x\n  ports:\n  - port: 80\n{extra}"
    )
}

#[test]
fn node_ports_and_cluster_ips_are_allocated_once() {
    let c = Cluster::start();
    // The kubernetes Service exists from the first start.
    assert_eq!(c.ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]), "10.96.0.1");

    // Dynamic allocation: distinct addresses inside 10.96.0.0/12, node ports in 30000-32767.
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..5 {
        c.ok_stdin(&["apply", "-f", "-"], &svc(&format!("s{i}"), "  type: NodePort\n"));
        let ip = c.ok(&["get", "svc", &format!("s{i}"), "-o", "jsonpath={.spec.clusterIP}"]);
        let o: Vec<u32> = ip.split('.').map(|p| p.parse().expect("octet")).collect();
        assert!(o[0] == 10 && (96..112).contains(&o[1]), "{ip} in 10.96.0.0/12");
        assert!(ips.insert(ip.clone()), "{ip} handed out twice");
        let port: i64 =
            c.ok(&["get", "svc", &format!("s{i}"), "-o", "jsonpath={.spec.ports[0].nodePort}"]).parse().expect("port");
        assert!((30000..=32767).contains(&port), "nodePort {port} in range");
    }

    // A requested node port that is taken is a 422; free again after the owner is deleted.
    c.ok_stdin(&["apply", "-f", "-"], &svc("a", "    nodePort: 30001\n  type: NodePort\n"));
    let out = c.kubectl_in(&["apply", "-f", "-"], Some(&svc("b", "    nodePort: 30001\n  type: NodePort\n")), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated"), "{err}");
    c.ok(&["delete", "svc", "a"]);
    c.ok_stdin(&["apply", "-f", "-"], &svc("b", "    nodePort: 30001\n  type: NodePort\n"));

    // The same for a requested cluster IP.
    c.ok_stdin(&["apply", "-f", "-"], &svc("ip1", "  clusterIP: 10.96.0.50\n"));
    let out = c.kubectl_in(&["apply", "-f", "-"], Some(&svc("ip2", "  clusterIP: 10.96.0.50\n")), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("provided IP is already allocated"));
    c.ok(&["delete", "svc", "ip1"]);
    c.ok_stdin(&["apply", "-f", "-"], &svc("ip2", "  clusterIP: 10.96.0.50\n"));

    // Switching to ClusterIP releases the node port.
    c.ok(&[
        "patch",
        "svc",
        "b",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":null}]}}"#,
    ]);
    c.ok_stdin(&["apply", "-f", "-"], &svc("c", "    nodePort: 30001\n  type: NodePort\n"));
}
