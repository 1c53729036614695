//! Node Leases in `kube-node-lease`: one per hollow node, named after it, held by it. A renewal
//! is one merge patch of `spec` (no read first, no conflicts); a missing Lease is created, owned
//! by its Node so that deleting the Node collects it. Callers hold a write slot.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::Shared;
use super::node::{NodeSlot, is_status};

pub(crate) const NAMESPACE: &str = "kube-node-lease";

pub(crate) async fn renew(shared: &Shared, slot: &NodeSlot) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {
        "holderIdentity": slot.name,
        "leaseDurationSeconds": shared.cfg.lease_seconds,
        "renewTime": now,
    }});
    match api.patch(&slot.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => match api.create(&PostParams::default(), &lease(shared, slot, now)).await {
            Ok(_) => Ok(()),
            // Created meanwhile by an earlier attempt whose answer was lost: renewed enough.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn lease(shared: &Shared, slot: &NodeSlot, now: MicroTime) -> Lease {
    let owner = slot.state().uid.clone().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: slot.name.clone(),
        uid,
        ..OwnerReference::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(slot.name.clone()),
            namespace: Some(NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(slot.name.clone()),
            lease_duration_seconds: Some(shared.cfg.lease_seconds),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    }
}
