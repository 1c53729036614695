//! The six CNI commands. [`run`] takes a validated invocation and the raw stdin and returns what to print
//! on stdout, or the error to report; the binary's `main` does only the I/O around it.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::agent::{self, AgentRequest, Endpoint};
use crate::config::{self, LATEST_VERSION, NetConf, SUPPORTED_VERSIONS, SpecVersion};
use crate::env::{Attachment, Command, Invocation};
use crate::error::{CniError, ErrorCode};
use crate::ipam::{Owner, Pool};
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::wiring::{self, PodWiring};

/// Runs one command. `Ok(Some(json))` is printed on stdout; `Ok(None)` prints nothing.
pub fn run(invocation: &Invocation, stdin: &[u8]) -> Result<Option<String>, CniError> {
    if invocation.command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let attachment = invocation.attachment.as_ref();
    match (invocation.command, attachment) {
        (Command::Add, Some(attachment)) => add(&conf, attachment).map(Some),
        (Command::Del, Some(attachment)) => del(&conf, attachment).map(|()| None),
        (Command::Check, Some(attachment)) => check(&conf, attachment).map(|()| None),
        (Command::Status, _) => status(&conf).map(|()| None),
        (Command::Gc, _) => gc(&conf).map(|()| None),
        _ => Err(CniError::new(ErrorCode::InvalidEnvironment, "invalid environment variables", "missing attachment")),
    }
}

/// VERSION: the request's `cniVersion` (or the newest) and every supported version.
fn version(stdin: &[u8]) -> String {
    let requested = config::peek_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_owned());
    serde_json::json!({ "cniVersion": requested, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

fn require_version(conf: &NetConf, minimum: SpecVersion, command: &str) -> Result<(), CniError> {
    if conf.version < minimum {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!("{command} needs cniVersion {minimum} or newer, the configuration has {}", conf.cni_version),
        ));
    }
    Ok(())
}

fn owner(attachment: &Attachment) -> Owner {
    Owner { container_id: attachment.container_id.clone(), ifname: attachment.ifname.clone() }
}

fn host_netlink() -> Result<Netlink, CniError> {
    Netlink::open().map_err(|error| CniError::new(ErrorCode::Kernel, "host netlink", crate::error::chain(&error)))
}

fn endpoint(conf: &NetConf, attachment: &Attachment, wiring_ip: Option<Ipv4Addr>, mac: Option<String>) -> Endpoint {
    Endpoint {
        network: conf.name.clone(),
        container_id: attachment.container_id.clone(),
        ifname: attachment.ifname.clone(),
        netns: attachment.netns.as_ref().map(|path| path.display().to_string()),
        host_veth: wiring::host_veth_name(&attachment.container_id, &attachment.ifname),
        ip: wiring_ip,
        mac,
        pod_namespace: attachment.arg("K8S_POD_NAMESPACE").map(str::to_owned),
        pod_name: attachment.arg("K8S_POD_NAME").map(str::to_owned),
        pod_uid: attachment.arg("K8S_POD_UID").map(str::to_owned),
    }
}

fn prev_result(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .map(CniResult::from_value)
        .transpose()
        .map_err(|error| CniError::new(ErrorCode::Decode, "failed to decode prevResult", error.to_string()))
}

/// The address `prevResult` assigned to this attachment's interface (the one named `CNI_IFNAME` in the
/// sandbox `CNI_NETNS`, or any interface of that name when the sandbox is not recorded).
fn previous_address(previous: &CniResult, attachment: &Attachment) -> Option<Ipv4Addr> {
    let netns = attachment.netns.as_ref().map(|path| path.display().to_string());
    let index = previous.interfaces.iter().position(|interface| {
        interface.name == attachment.ifname
            && (netns.is_none() || interface.sandbox.is_none() || interface.sandbox == netns)
    })?;
    previous
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(index))
        .find_map(|ip| ip.address.split('/').next()?.parse::<Ipv4Addr>().ok())
}

fn add(conf: &NetConf, attachment: &Attachment) -> Result<String, CniError> {
    let netns_path = attachment.netns.as_deref().expect("ADD invocations always carry CNI_NETNS");
    let previous = prev_result(conf)?;
    let netns = NetNs::open(netns_path)?;
    let mut pod = netns.netlink()?;
    let mut host = host_netlink()?;

    let pool = Pool::new(&conf.data_dir, conf.pod_cidr);
    let owner = owner(attachment);
    let pod_ip = pool.allocate(&owner)?;
    let wiring =
        PodWiring::new(&attachment.container_id, &attachment.ifname, pod_ip, conf.pod_cidr.gateway(), conf.mtu);

    match wiring::create_pair(&mut host, &mut pod, &netns, &wiring) {
        // The interrupted attachment that left the old host veth may also have left an allocation.
        Ok(true) => {
            if let Err(error) = pool.release_except(&owner, pod_ip) {
                eprintln!("keelson: ADD {}: {}", attachment.container_id, crate::error::chain(&error));
            }
        }
        Ok(false) => {}
        Err(error) => {
            let mut error = CniError::from(error);
            if let Err(rollback) = pool.release(&owner, Some(pod_ip)) {
                error.details.push_str(&format!("; rollback: {}", crate::error::chain(&rollback)));
            }
            return Err(error);
        }
    }
    let wired = wiring::configure(&mut host, &mut pod, &wiring).map_err(CniError::from).and_then(|()| {
        let Some(socket) = &conf.agent_socket else { return Ok(()) };
        let endpoint = endpoint(conf, attachment, Some(pod_ip), Some(wiring.pod_mac.to_string()));
        agent::send(socket, &AgentRequest::Add(endpoint), conf.agent_timeout).map_err(CniError::from)
    });
    if let Err(mut error) = wired {
        // Roll back: the host veth takes the pod side, addresses, routes and neighbours with it.
        if let Err(rollback) = wiring::teardown(&mut host, &wiring.host_veth) {
            error.details.push_str(&format!("; rollback: {}", crate::error::chain(&rollback)));
        }
        if let Err(rollback) = pool.release(&owner, Some(pod_ip)) {
            error.details.push_str(&format!("; rollback: {}", crate::error::chain(&rollback)));
        }
        return Err(error);
    }

    let gateway = wiring.gateway.to_string();
    let ours = CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: wiring.host_veth.clone(),
                mac: Some(wiring.host_mac.to_string()),
                mtu: Some(conf.mtu),
                sandbox: None,
            },
            Interface {
                name: attachment.ifname.clone(),
                mac: Some(wiring.pod_mac.to_string()),
                mtu: Some(conf.mtu),
                sandbox: Some(netns_path.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            version: None,
            address: format!("{pod_ip}/32"),
            gateway: Some(gateway.clone()),
            interface: Some(1),
        }],
        routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some(gateway), scope: Some(0) }],
        dns: conf.dns.clone().unwrap_or_default(),
    };
    let result = match previous {
        Some(previous) => previous.merge(ours),
        None => ours,
    };
    Ok(result.for_version(&conf.cni_version, conf.version).to_json())
}

fn del(conf: &NetConf, attachment: &Attachment) -> Result<(), CniError> {
    // A broken prevResult must not make DEL fail: it only speeds up the release.
    let hint = prev_result(conf).ok().flatten().and_then(|previous| previous_address(&previous, attachment));
    let host_veth = wiring::host_veth_name(&attachment.container_id, &attachment.ifname);
    let mut host = host_netlink()?;
    // Keep the address reserved while its veth and route might still exist, so the runtime's retry
    // finds both.
    wiring::teardown(&mut host, &host_veth)?;
    let pool = Pool::new(&conf.data_dir, conf.pod_cidr);
    let released = pool.release(&owner(attachment), hint)?;
    if let Some(socket) = &conf.agent_socket {
        let endpoint = endpoint(conf, attachment, released.first().copied().or(hint), None);
        if let Err(error) = agent::send(socket, &AgentRequest::Del(endpoint), conf.agent_timeout) {
            eprintln!("keelson: DEL {}: {}", attachment.container_id, crate::error::chain(&error));
        }
    }
    Ok(())
}

fn check(conf: &NetConf, attachment: &Attachment) -> Result<(), CniError> {
    require_version(conf, SpecVersion::V0_4_0, "CHECK")?;
    let previous = prev_result(conf)?.ok_or_else(|| {
        CniError::new(ErrorCode::InvalidConfig, "invalid network configuration", "CHECK requires prevResult")
    })?;
    let drift = |details: String| CniError::new(ErrorCode::Drift, "attachment differs from prevResult", details);
    let pod_ip = previous_address(&previous, attachment).ok_or_else(|| {
        drift(format!("prevResult has no address for interface {} of this sandbox", attachment.ifname))
    })?;
    let netns = NetNs::open(attachment.netns.as_deref().expect("CHECK invocations always carry CNI_NETNS"))?;
    let mut pod = netns.netlink()?;
    let mut host = host_netlink()?;

    let pool = Pool::new(&conf.data_dir, conf.pod_cidr);
    let mut problems = Vec::new();
    if pool.owner(pod_ip)? != Some(owner(attachment)) {
        problems.push(format!("address {pod_ip} is not reserved for this attachment"));
    }
    let wiring =
        PodWiring::new(&attachment.container_id, &attachment.ifname, pod_ip, conf.pod_cidr.gateway(), conf.mtu);
    problems.extend(wiring::check(&mut host, &mut pod, &wiring)?);
    if !problems.is_empty() {
        return Err(drift(problems.join("; ")));
    }
    if let Some(socket) = &conf.agent_socket {
        let endpoint = endpoint(conf, attachment, Some(pod_ip), Some(wiring.pod_mac.to_string()));
        agent::send(socket, &AgentRequest::Check(endpoint), conf.agent_timeout)?;
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    require_version(conf, SpecVersion::V1_1_0, "STATUS")?;
    let not_available = |details: String| CniError::new(ErrorCode::NotAvailable, "plugin not available", details);
    let pool = Pool::new(&conf.data_dir, conf.pod_cidr);
    let free = pool.status().map_err(|error| not_available(crate::error::chain(&error)))?;
    if free == 0 {
        return Err(not_available(format!(
            "address range exhausted: all {} addresses of {} are allocated",
            pool.capacity(),
            conf.pod_cidr
        )));
    }
    if let Some(socket) = &conf.agent_socket {
        agent::send(socket, &AgentRequest::Ping, conf.agent_timeout)
            .map_err(|error| not_available(crate::error::chain(&error)))?;
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    require_version(conf, SpecVersion::V1_1_0, "GC")?;
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "invalid network configuration",
            "GC requires cni.dev/valid-attachments",
        )
    })?;
    let keep: HashSet<Owner> = valid
        .iter()
        .map(|attachment| Owner { container_id: attachment.container_id.clone(), ifname: attachment.ifname.clone() })
        .collect();
    let pool = Pool::new(&conf.data_dir, conf.pod_cidr);
    let released = pool.retain(&keep)?;
    // Continue past failures and report them all at the end, as the spec asks of GC.
    let mut failures = Vec::new();
    let mut host = if released.is_empty() { None } else { Some(host_netlink()?) };
    for (ip, stale) in &released {
        let host_veth = wiring::host_veth_name(&stale.container_id, &stale.ifname);
        if let Some(host) = host.as_mut()
            && let Err(error) = wiring::teardown(host, &host_veth)
        {
            failures.push(crate::error::chain(&error));
        }
        if let Some(socket) = &conf.agent_socket {
            let attachment = Attachment {
                container_id: stale.container_id.clone(),
                ifname: stale.ifname.clone(),
                netns: None,
                args: Vec::new(),
            };
            let endpoint = endpoint(conf, &attachment, Some(*ip), None);
            if let Err(error) = agent::send(socket, &AgentRequest::Del(endpoint), conf.agent_timeout) {
                eprintln!("keelson: GC {}: {}", stale.container_id, crate::error::chain(&error));
            }
        }
    }
    if !failures.is_empty() {
        return Err(CniError::new(ErrorCode::Kernel, "garbage collection incomplete", failures.join("; ")));
    }
    Ok(())
}
