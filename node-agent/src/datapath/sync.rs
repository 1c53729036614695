//! Applying a desired service table to the maps with as few writes as possible.
//!
//! [`Programmed`] mirrors what the `SERVICES` and `BACKENDS` maps hold, so every change costs only
//! the writes it needs: a new service writes its backends then its entry, a removed one deletes
//! its entry then its backends, and a changed backend set reuses the slots of departed backends
//! for arrivals, appends the rest, or fills holes from the tail before shrinking the count. The
//! order of writes keeps every slot below the published count valid at all times, so a program
//! racing with an update always finds a backend. The maps sit behind [`LbMaps`] so this logic is
//! tested against a fake here and runs against the kernel maps in `super`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;

use keelson_ebpf_common::{Backend, BackendKey, ServiceKey, ServiceValue};
use tracing::warn;

use super::Error;
use super::service::{Protocol, Service, SyncStats};

/// The map operations the sync needs.
pub(crate) trait LbMaps {
    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), Error>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error>;
    fn set_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), Error>;
    /// Deleting a key that is absent is not an error.
    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), Error>;
    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, Error>;
    fn backend_keys(&self) -> Result<Vec<BackendKey>, Error>;
    fn backend(&self, key: &BackendKey) -> Result<Option<Backend>, Error>;
}

/// The backends of one programmed service, by slot, and its affinity timeout.
#[derive(Debug, Clone)]
struct Slots {
    id: u32,
    backends: Vec<Backend>,
    /// [`ServiceValue::affinity_timeout`].
    affinity: u32,
}

impl Slots {
    /// The service's map value.
    fn value(&self) -> Result<ServiceValue, Error> {
        Ok(ServiceValue { id: self.id, count: count(&self.backends)?, affinity_timeout: self.affinity, _pad: 0 })
    }
}

/// What the maps hold, as far as this process knows; rebuilt with [`Programmed::read`] after a
/// restart (pinned maps) or a failed write.
#[derive(Debug, Default)]
pub(crate) struct Programmed {
    services: HashMap<ServiceKey, Slots>,
    ids: Ids,
}

impl Programmed {
    /// Reads the maps, repairing what an interrupted update may have left: backends no live
    /// service owns are deleted, and a service with a missing slot is removed (the next sync
    /// writes it again).
    pub(crate) fn read(maps: &mut impl LbMaps) -> Result<Self, Error> {
        let mut programmed = Self::default();
        for (key, value) in maps.services()? {
            let mut backends = Vec::with_capacity(value.count as usize);
            for slot in 0..value.count {
                match maps.backend(&BackendKey { service: value.id, slot })? {
                    Some(backend) => backends.push(backend),
                    None => break,
                }
            }
            if backends.len() != value.count as usize || Protocol::from_ipproto(key.proto).is_none() {
                warn!(vip = %key.vip(), port = key.port(), proto = key.proto, "dropping inconsistent service entry");
                maps.remove_service(&key)?;
                continue;
            }
            programmed.ids.used.insert(value.id);
            programmed.services.insert(key, Slots { id: value.id, backends, affinity: value.affinity_timeout });
        }
        for key in maps.backend_keys()? {
            let owned =
                programmed.services.values().any(|s| s.id == key.service && (key.slot as usize) < s.backends.len());
            if !owned {
                maps.remove_backend(&key)?;
            }
        }
        programmed.ids.rebuild();
        Ok(programmed)
    }

    /// The programmed services, ordered by frontend.
    pub(crate) fn table(&self) -> Vec<Service> {
        let mut table: Vec<Service> = self
            .services
            .iter()
            .filter_map(|(key, slots)| {
                Some(Service {
                    vip: key.vip(),
                    port: key.port(),
                    proto: Protocol::from_ipproto(key.proto)?,
                    backends: slots.backends.iter().map(Backend::socket_addr).collect(),
                    affinity: Service::affinity_from_timeout(slots.affinity),
                })
            })
            .collect();
        table.sort_by_key(|s| (s.vip, s.port, s.proto));
        table
    }

    /// Makes the maps hold exactly `desired`.
    pub(crate) fn sync(&mut self, maps: &mut impl LbMaps, desired: &[Service]) -> Result<SyncStats, Error> {
        let mut wanted: HashMap<ServiceKey, (Vec<Backend>, u32)> = HashMap::with_capacity(desired.len());
        for service in desired {
            let want = (dedup(&service.backends), service.affinity_timeout());
            if wanted.insert(service.key(), want).is_some() {
                return Err(Error::DuplicateService { service: service.to_string() });
            }
        }
        let mut stats = SyncStats::default();
        let stale: Vec<ServiceKey> = self.services.keys().filter(|key| !wanted.contains_key(key)).copied().collect();
        for key in stale {
            stats += self.remove(maps, &key)?;
        }
        for (key, (backends, affinity)) in wanted {
            stats += self.put(maps, key, backends, affinity)?;
        }
        Ok(stats)
    }

    /// Adds or changes one service.
    pub(crate) fn upsert(&mut self, maps: &mut impl LbMaps, service: &Service) -> Result<SyncStats, Error> {
        self.put(maps, service.key(), dedup(&service.backends), service.affinity_timeout())
    }

    /// Removes one service; nothing happens if it is not programmed.
    pub(crate) fn remove(&mut self, maps: &mut impl LbMaps, key: &ServiceKey) -> Result<SyncStats, Error> {
        let mut stats = SyncStats::default();
        let Some(slots) = self.services.remove(key) else {
            return Ok(stats);
        };
        let mut maps = Counting::new(maps);
        // The entry first, so no program picks a slot that is about to go.
        maps.remove_service(key)?;
        for slot in 0..slots.backends.len() {
            maps.remove_backend(&BackendKey { service: slots.id, slot: slot as u32 })?;
        }
        self.ids.free(slots.id);
        stats.services_removed = 1;
        stats.map_writes = maps.writes;
        Ok(stats)
    }

    fn put(
        &mut self,
        maps: &mut impl LbMaps,
        key: ServiceKey,
        want: Vec<Backend>,
        affinity: u32,
    ) -> Result<SyncStats, Error> {
        let mut stats = SyncStats::default();
        let mut maps = Counting::new(maps);
        match self.services.get_mut(&key) {
            None => {
                let id = self.ids.alloc()?;
                for (slot, backend) in (0..).zip(&want) {
                    maps.set_backend(&BackendKey { service: id, slot }, backend)?;
                }
                let slots = Slots { id, backends: want, affinity };
                maps.set_service(&key, &slots.value()?)?;
                self.services.insert(key, slots);
                stats.services_added = 1;
            }
            Some(slots) => {
                let affinity_changed = slots.affinity != affinity;
                slots.affinity = affinity;
                let published = update_slots(&mut maps, &key, slots, &want)?;
                if affinity_changed && !published {
                    maps.set_service(&key, &slots.value()?)?;
                }
                if maps.writes > 0 {
                    stats.services_updated = 1;
                }
            }
        }
        stats.map_writes = maps.writes;
        Ok(stats)
    }
}

/// Turns `slots` into a dense slot array holding exactly `want`, in O(changed backends) writes.
/// Returns whether it wrote the service's value (with the count and `slots.affinity`).
fn update_slots(maps: &mut impl LbMaps, key: &ServiceKey, slots: &mut Slots, want: &[Backend]) -> Result<bool, Error> {
    let wanted: HashSet<Backend> = want.iter().copied().collect();
    let current: HashSet<Backend> = slots.backends.iter().copied().collect();
    let mut arrivals = want.iter().filter(|backend| !current.contains(backend));
    let mut holes = Vec::new();
    // Departed backends' slots take arrivals in place: one write each.
    for (slot, current) in slots.backends.iter_mut().enumerate() {
        if wanted.contains(&*current) {
            continue;
        }
        match arrivals.next() {
            Some(backend) => {
                maps.set_backend(&BackendKey { service: slots.id, slot: slot as u32 }, backend)?;
                *current = *backend;
            }
            None => holes.push(slot),
        }
    }
    // More arrivals than departures: append, then publish the new count.
    let mut appended = false;
    for backend in arrivals {
        maps.set_backend(&BackendKey { service: slots.id, slot: count(&slots.backends)? }, backend)?;
        slots.backends.push(*backend);
        appended = true;
    }
    if appended {
        maps.set_service(key, &slots.value()?)?;
        return Ok(true);
    }
    if holes.is_empty() {
        return Ok(false);
    }
    // More departures than arrivals: move kept backends from the tail into the holes below the
    // new length, publish the shorter count, then delete the tail.
    let old_len = slots.backends.len();
    let new_len = old_len - holes.len();
    let mut tail_kept = (new_len..old_len).filter(|slot| !holes.contains(slot));
    for &hole in holes.iter().filter(|&&hole| hole < new_len) {
        let from = tail_kept.next().expect("as many kept tail slots as holes below the new length");
        let backend = slots.backends[from];
        maps.set_backend(&BackendKey { service: slots.id, slot: hole as u32 }, &backend)?;
        slots.backends[hole] = backend;
    }
    slots.backends.truncate(new_len);
    maps.set_service(key, &slots.value()?)?;
    for slot in new_len..old_len {
        maps.remove_backend(&BackendKey { service: slots.id, slot: slot as u32 })?;
    }
    Ok(true)
}

fn count(backends: &[Backend]) -> Result<u32, Error> {
    u32::try_from(backends.len()).map_err(|_| Error::TooManyBackends { count: backends.len() })
}

/// The backends in map form, first occurrence kept.
fn dedup(backends: &[SocketAddrV4]) -> Vec<Backend> {
    let mut seen = HashSet::with_capacity(backends.len());
    backends.iter().map(|addr| Backend::new(*addr)).filter(|backend| seen.insert(*backend)).collect()
}

/// Service ids: unique among live services, reused after removal.
#[derive(Debug, Default)]
struct Ids {
    used: HashSet<u32>,
    free: Vec<u32>,
    next: u32,
}

impl Ids {
    fn alloc(&mut self) -> Result<u32, Error> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                // Ids start at 1 so that 0 never names a live service.
                self.next = self.next.max(1);
                let id = self.next;
                self.next = self.next.checked_add(1).ok_or(Error::ServiceIdsExhausted)?;
                id
            }
        };
        self.used.insert(id);
        Ok(id)
    }

    fn free(&mut self, id: u32) {
        if self.used.remove(&id) {
            self.free.push(id);
        }
    }

    /// After `used` was filled from the maps: the next fresh id and the gaps below it.
    fn rebuild(&mut self) {
        self.next = self.used.iter().max().map_or(1, |max| max + 1);
        self.free = (1..self.next).filter(|id| !self.used.contains(id)).rev().collect();
    }
}

/// Counts the writes that pass through it.
struct Counting<'a, M> {
    maps: &'a mut M,
    writes: usize,
}

impl<'a, M: LbMaps> Counting<'a, M> {
    fn new(maps: &'a mut M) -> Self {
        Self { maps, writes: 0 }
    }
}

impl<M: LbMaps> LbMaps for Counting<'_, M> {
    fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), Error> {
        self.writes += 1;
        self.maps.set_service(key, value)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.writes += 1;
        self.maps.remove_service(key)
    }

    fn set_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), Error> {
        self.writes += 1;
        self.maps.set_backend(key, value)
    }

    fn remove_backend(&mut self, key: &BackendKey) -> Result<(), Error> {
        self.writes += 1;
        self.maps.remove_backend(key)
    }

    fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, Error> {
        self.maps.services()
    }

    fn backend_keys(&self) -> Result<Vec<BackendKey>, Error> {
        self.maps.backend_keys()
    }

    fn backend(&self, key: &BackendKey) -> Result<Option<Backend>, Error> {
        self.maps.backend(key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::Ipv4Addr;

    use super::*;

    /// The two maps as plain collections.
    #[derive(Debug, Default)]
    struct FakeMaps {
        services: BTreeMap<ServiceKey, ServiceValue>,
        backends: BTreeMap<BackendKey, Backend>,
    }

    impl LbMaps for FakeMaps {
        fn set_service(&mut self, key: &ServiceKey, value: &ServiceValue) -> Result<(), Error> {
            self.services.insert(*key, *value);
            Ok(())
        }

        fn remove_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
            self.services.remove(key);
            Ok(())
        }

        fn set_backend(&mut self, key: &BackendKey, value: &Backend) -> Result<(), Error> {
            self.backends.insert(*key, *value);
            Ok(())
        }

        fn remove_backend(&mut self, key: &BackendKey) -> Result<(), Error> {
            self.backends.remove(key);
            Ok(())
        }

        fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, Error> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }

        fn backend_keys(&self) -> Result<Vec<BackendKey>, Error> {
            Ok(self.backends.keys().copied().collect())
        }

        fn backend(&self, key: &BackendKey) -> Result<Option<Backend>, Error> {
            Ok(self.backends.get(key).copied())
        }
    }

    impl FakeMaps {
        /// What a program would see: every service's backend set, with the invariants checked
        /// (dense slots below the count, no backend entry outside them, unique ids).
        fn view(&self) -> BTreeMap<ServiceKey, BTreeSet<SocketAddrV4>> {
            let mut ids = HashSet::new();
            let mut owned = 0;
            let view = self
                .services
                .iter()
                .map(|(key, value)| {
                    assert!(ids.insert(value.id), "service id {} used twice", value.id);
                    let backends = (0..value.count)
                        .map(|slot| {
                            owned += 1;
                            self.backends[&BackendKey { service: value.id, slot }].socket_addr()
                        })
                        .collect();
                    (*key, backends)
                })
                .collect();
            assert_eq!(owned, self.backends.len(), "backend entries outside live slots: {:?}", self.backends);
            view
        }
    }

    fn expected(table: &[Service]) -> BTreeMap<ServiceKey, BTreeSet<SocketAddrV4>> {
        table.iter().map(|s| (s.key(), s.backends.iter().copied().collect())).collect()
    }

    fn backend(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, last), port)
    }

    fn service(last: u8, proto: Protocol, backends: &[u8]) -> Service {
        Service {
            vip: Ipv4Addr::new(10, 96, 0, last),
            port: 80,
            proto,
            backends: backends.iter().map(|b| backend(*b, 8080)).collect(),
            affinity: None,
        }
    }

    #[test]
    fn first_sync_writes_each_entry_once_and_second_sync_nothing() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        let table = vec![
            service(1, Protocol::Tcp, &[1, 2, 3]),
            service(1, Protocol::Udp, &[4]),
            service(2, Protocol::Tcp, &[]),
        ];
        let stats = programmed.sync(&mut maps, &table).expect("sync");
        assert_eq!(stats, SyncStats { services_added: 3, services_updated: 0, services_removed: 0, map_writes: 3 + 4 });
        assert_eq!(maps.view(), expected(&table));
        assert_eq!(programmed.sync(&mut maps, &table).expect("sync again"), SyncStats::default());
        let mut listed = programmed.table();
        listed.iter_mut().for_each(|s| s.backends.sort());
        let mut sorted = table.clone();
        sorted.sort_by_key(|s| (s.vip, s.port, s.proto));
        assert_eq!(listed, sorted);
    }

    #[test]
    fn one_backend_change_costs_constant_writes() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        programmed.sync(&mut maps, &[service(1, Protocol::Tcp, &[1, 2, 3, 4, 5])]).expect("sync");

        // Removing one from the middle: move the tail into the hole, shrink, delete the tail.
        let table = [service(1, Protocol::Tcp, &[1, 2, 4, 5])];
        let stats = programmed.sync(&mut maps, &table).expect("remove one");
        assert_eq!(stats.map_writes, 3);
        assert_eq!(stats.services_updated, 1);
        assert_eq!(maps.view(), expected(&table));

        // Removing the last slot: shrink and delete only.
        let last = maps.backends[&BackendKey { service: 1, slot: 3 }].socket_addr();
        let remaining: Vec<u8> = [1, 2, 4, 5].into_iter().filter(|b| backend(*b, 8080) != last).collect();
        let table = [service(1, Protocol::Tcp, &remaining)];
        assert_eq!(programmed.sync(&mut maps, &table).expect("remove last").map_writes, 2);
        assert_eq!(maps.view(), expected(&table));

        // Replacing one: a single in-place write, the count is untouched.
        let mut replaced = remaining.clone();
        replaced[0] = 9;
        let table = [service(1, Protocol::Tcp, &replaced)];
        assert_eq!(programmed.sync(&mut maps, &table).expect("replace").map_writes, 1);
        assert_eq!(maps.view(), expected(&table));

        // Adding one: the slot, then the count.
        replaced.push(10);
        let table = [service(1, Protocol::Tcp, &replaced)];
        assert_eq!(programmed.sync(&mut maps, &table).expect("add").map_writes, 2);
        assert_eq!(maps.view(), expected(&table));
    }

    #[test]
    fn removing_a_service_frees_its_id_and_entries() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        programmed
            .sync(&mut maps, &[service(1, Protocol::Tcp, &[1, 2]), service(2, Protocol::Tcp, &[3])])
            .expect("sync");
        let stats = programmed.sync(&mut maps, &[service(2, Protocol::Tcp, &[3])]).expect("remove");
        assert_eq!(stats, SyncStats { services_removed: 1, map_writes: 3, ..SyncStats::default() });
        assert_eq!(maps.backends.len(), 1);
        programmed.upsert(&mut maps, &service(3, Protocol::Udp, &[4])).expect("upsert");
        let ids: BTreeSet<u32> = maps.services.values().map(|v| v.id).collect();
        assert_eq!(ids, BTreeSet::from([1, 2]), "the freed id is reused");
        assert_eq!(
            programmed.remove(&mut maps, &service(9, Protocol::Tcp, &[]).key()).expect("absent"),
            SyncStats::default()
        );
    }

    #[test]
    fn duplicate_frontends_and_backends() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        let error = programmed
            .sync(&mut maps, &[service(1, Protocol::Tcp, &[1]), service(1, Protocol::Tcp, &[2])])
            .expect_err("two services with one frontend");
        assert!(matches!(error, Error::DuplicateService { .. }), "{error}");
        programmed.sync(&mut maps, &[service(1, Protocol::Tcp, &[1, 1, 2])]).expect("sync");
        assert_eq!(maps.services.values().next().expect("one service").count, 2, "duplicate backend kept once");
    }

    #[test]
    fn read_restores_state_and_repairs_leftovers() {
        let mut maps = FakeMaps::default();
        let table = vec![service(1, Protocol::Tcp, &[1, 2, 3]), service(2, Protocol::Udp, &[4, 5])];
        Programmed::default().sync(&mut maps, &table).expect("sync");
        // Leftovers of an interrupted update: an orphan backend and a service missing a slot.
        maps.backends.insert(BackendKey { service: 77, slot: 0 }, Backend::new(backend(9, 1)));
        let broken = service(3, Protocol::Tcp, &[]).key();
        maps.services.insert(broken, ServiceValue { id: 5, count: 2, affinity_timeout: 0, _pad: 0 });
        maps.backends.insert(BackendKey { service: 5, slot: 0 }, Backend::new(backend(8, 1)));

        let mut programmed = Programmed::read(&mut maps).expect("read");
        assert_eq!(maps.view(), expected(&table), "leftovers removed");
        assert_eq!(programmed.sync(&mut maps, &table).expect("resync").map_writes, 0);
        let stats = programmed.upsert(&mut maps, &service(4, Protocol::Tcp, &[6])).expect("new service");
        assert_eq!(stats.services_added, 1);
        let ids: BTreeSet<u32> = maps.services.values().map(|v| v.id).collect();
        assert_eq!(ids.len(), 3, "a fresh id that does not collide with restored ones");
    }

    #[test]
    fn an_affinity_change_is_an_update_written_with_the_service_value() {
        use std::time::Duration;
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        let mut web = service(1, Protocol::Tcp, &[1, 2, 3]);
        web.affinity = Some(Duration::from_secs(10_800));
        let stats = programmed.sync(&mut maps, std::slice::from_ref(&web)).expect("sync");
        assert_eq!((stats.services_added, stats.map_writes), (1, 4));
        let value = |maps: &FakeMaps| *maps.services.values().next().expect("one service");
        assert_eq!(value(&maps).affinity_timeout, 10_800);

        // Only the timeout changes: one write of the value, counted as an update.
        web.affinity = Some(Duration::from_secs(2));
        let stats = programmed.upsert(&mut maps, &web).expect("new timeout");
        assert_eq!(stats, SyncStats { services_updated: 1, map_writes: 1, ..SyncStats::default() });
        assert_eq!(value(&maps).affinity_timeout, 2);
        assert_eq!(programmed.sync(&mut maps, std::slice::from_ref(&web)).expect("again"), SyncStats::default());

        // Timeout off and a backend added: the count's write carries the timeout too.
        web.affinity = None;
        web.backends.push(backend(4, 8080));
        let stats = programmed.upsert(&mut maps, &web).expect("off and one more");
        assert_eq!((stats.services_updated, stats.map_writes), (1, 2));
        assert_eq!((value(&maps).affinity_timeout, value(&maps).count), (0, 4));

        // Read back after a restart.
        web.affinity = Some(Duration::from_secs(60));
        programmed.upsert(&mut maps, &web).expect("on again");
        let restored = Programmed::read(&mut maps).expect("read");
        assert_eq!(restored.table()[0].affinity, Some(Duration::from_secs(60)));
    }

    /// Random tables, each synced over the last: the maps always equal the table and keep
    /// their invariants.
    #[test]
    fn random_tables_converge() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        for round in 0..300 {
            let mut table = Vec::new();
            for vip in 0..(1 + next(8) as u8) {
                if next(4) == 0 {
                    continue;
                }
                let proto = if next(2) == 0 { Protocol::Tcp } else { Protocol::Udp };
                let backends: Vec<u8> = (0..next(7)).map(|_| next(12) as u8).collect();
                let s = service(vip, proto, &backends);
                if !table.iter().any(|t: &Service| t.key() == s.key()) {
                    table.push(s);
                }
            }
            programmed.sync(&mut maps, &table).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(maps.view(), expected(&table), "round {round}");
        }
    }
}
