//! Applying a desired service table to the maps with as few writes as possible.
//!
//! [`Programmed`] mirrors what the `SERVICES`, `BACKENDS` and `MAGLEV` maps hold, so every change
//! costs only
//! the writes it needs: a new service writes its backends then its entry, a removed one deletes
//! its entry then its backends, and a changed backend set reuses the slots of departed backends
//! for arrivals, appends the rest, or fills holes from the tail before shrinking the count. The
//! order of writes keeps every slot below the published count valid at all times, so a program
//! racing with an update always finds a backend. The maps sit behind [`LbMaps`] so this logic is
//! tested against a fake here and runs against the kernel maps in `super`.
//!
//! A service with [`Service::maglev`] also has a Maglev table ([`super::maglev`]) in `MAGLEV`:
//! it is written before the flag is published and deleted after the flag is cleared or the
//! service removed; a backend change rewrites only the entries whose backend changed (about
//! `M / N` for one backend of `N`). At most [`MAGLEV_MAX_SERVICES`] services have a table; further
//! ones are programmed without (random choice) and a warning. A program that finds the flag but
//! not the entry (an update in progress) picks at random, so no order of writes drops a flow.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;

use keelson_ebpf_common::{
    Backend, BackendKey, MAGLEV_MAX_SERVICES, MAGLEV_TABLE_SIZE, MaglevKey, SERVICE_F_MAGLEV, ServiceKey, ServiceValue,
};
use tracing::warn;

use super::Error;
use super::maglev::{self, TABLE_SIZE};
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
    fn set_maglev(&mut self, key: &MaglevKey, value: &Backend) -> Result<(), Error>;
    /// Deleting a key that is absent is not an error.
    fn remove_maglev(&mut self, key: &MaglevKey) -> Result<(), Error>;
    fn maglev_entries(&self) -> Result<Vec<(MaglevKey, Backend)>, Error>;
}

/// A Maglev table as programmed: one entry per index, `None` where the map has none.
type Table = Vec<Option<Backend>>;

/// The backends of one programmed service, by slot, its affinity timeout and its Maglev table.
#[derive(Debug, Clone)]
struct Slots {
    id: u32,
    backends: Vec<Backend>,
    /// [`ServiceValue::affinity_timeout`].
    affinity: u32,
    /// The table, [`TABLE_SIZE`] entries, when the service has [`SERVICE_F_MAGLEV`].
    maglev: Option<Table>,
}

impl Slots {
    /// The service's map value.
    fn value(&self) -> Result<ServiceValue, Error> {
        Ok(ServiceValue {
            id: self.id,
            count: count(&self.backends)?,
            affinity_timeout: self.affinity,
            flags: if self.maglev.is_some() { SERVICE_F_MAGLEV } else { 0 },
        })
    }
}

/// What one service should look like in the maps.
struct Want {
    backends: Vec<Backend>,
    /// [`ServiceValue::affinity_timeout`].
    affinity: u32,
    maglev: bool,
}

impl Want {
    fn of(service: &Service) -> Self {
        Self { backends: dedup(&service.backends), affinity: service.affinity_timeout(), maglev: service.maglev }
    }
}

/// What the maps hold, as far as this process knows; rebuilt with [`Programmed::read`] after a
/// restart (pinned maps) or a failed write.
#[derive(Debug, Default)]
pub(crate) struct Programmed {
    services: HashMap<ServiceKey, Slots>,
    ids: Ids,
    /// How many of `services` have a Maglev table.
    maglev_services: usize,
}

impl Programmed {
    /// Reads the maps, repairing what an interrupted update may have left: backends and Maglev
    /// entries no live service owns are deleted, and a service with a missing slot is removed
    /// (the next sync writes it again). A Maglev table with missing or wrong entries is kept as
    /// it is; the next write of its service fixes them.
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
            let maglev = value.maglev().then(|| vec![None; TABLE_SIZE]);
            programmed.maglev_services += usize::from(maglev.is_some());
            programmed.services.insert(key, Slots { id: value.id, backends, affinity: value.affinity_timeout, maglev });
        }
        let tables: HashMap<u32, ServiceKey> =
            programmed.services.iter().filter(|(_, s)| s.maglev.is_some()).map(|(key, s)| (s.id, *key)).collect();
        for (key, backend) in maps.maglev_entries()? {
            let table = tables
                .get(&key.service)
                .and_then(|service| programmed.services.get_mut(service))
                .and_then(|slots| slots.maglev.as_mut())
                .and_then(|table| table.get_mut(key.index as usize));
            match table {
                Some(entry) => *entry = Some(backend),
                None => maps.remove_maglev(&key)?,
            }
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

    /// The backends programmed for `key` (none when it is not programmed).
    pub(crate) fn backends_of(&self, key: &ServiceKey) -> Vec<SocketAddrV4> {
        self.services
            .get(key)
            .map(|slots| slots.backends.iter().map(Backend::socket_addr).collect())
            .unwrap_or_default()
    }

    /// The programmed frontends.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
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
                    maglev: slots.maglev.is_some(),
                })
            })
            .collect();
        table.sort_by_key(|s| (s.vip, s.port, s.proto));
        table
    }

    /// Makes the maps hold exactly `desired`.
    pub(crate) fn sync(&mut self, maps: &mut impl LbMaps, desired: &[Service]) -> Result<SyncStats, Error> {
        let mut wanted: HashMap<ServiceKey, Want> = HashMap::with_capacity(desired.len());
        for service in desired {
            if wanted.insert(service.key(), Want::of(service)).is_some() {
                return Err(Error::DuplicateService { service: service.to_string() });
            }
        }
        let mut stats = SyncStats::default();
        let stale: Vec<ServiceKey> = self.services.keys().filter(|key| !wanted.contains_key(key)).copied().collect();
        for key in stale {
            stats += self.remove(maps, &key)?;
        }
        // Services that lose their table first, so that their room goes to those that want one.
        let mut wanted: Vec<(ServiceKey, Want)> = wanted.into_iter().collect();
        wanted.sort_by_key(|(key, want)| (want.maglev, *key));
        for (key, want) in wanted {
            stats += self.put(maps, key, want)?;
        }
        Ok(stats)
    }

    /// Adds or changes one service.
    pub(crate) fn upsert(&mut self, maps: &mut impl LbMaps, service: &Service) -> Result<SyncStats, Error> {
        self.put(maps, service.key(), Want::of(service))
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
        if let Some(mut table) = slots.maglev {
            self.maglev_services -= 1;
            update_table(&mut maps, slots.id, &mut table, &[])?;
        }
        self.ids.free(slots.id);
        stats.services_removed = 1;
        stats.map_writes = maps.writes;
        Ok(stats)
    }

    fn put(&mut self, maps: &mut impl LbMaps, key: ServiceKey, want: Want) -> Result<SyncStats, Error> {
        let mut stats = SyncStats::default();
        let mut maps = Counting::new(maps);
        let has_table = self.services.get(&key).is_some_and(|slots| slots.maglev.is_some());
        // The value as published, before the table is taken out of `slots` below.
        let before = self.services.get(&key).map(Slots::value).transpose()?;
        let maglev = want.maglev && (has_table || self.maglev_services < MAGLEV_MAX_SERVICES as usize);
        if want.maglev && !maglev {
            warn!(vip = %key.vip(), port = key.port(), proto = key.proto, "no room for another Maglev table");
        }
        // The table goes in before the flag that makes programs read it.
        let table = if maglev {
            let mut table = self
                .services
                .get_mut(&key)
                .and_then(|slots| slots.maglev.take())
                .unwrap_or_else(|| vec![None; TABLE_SIZE]);
            let id = match self.services.get(&key) {
                Some(slots) => slots.id,
                None => self.ids.alloc()?,
            };
            update_table(&mut maps, id, &mut table, &maglev::backend_table(&want.backends))?;
            Some((id, table))
        } else {
            None
        };
        self.maglev_services = self.maglev_services + usize::from(maglev) - usize::from(has_table);
        match self.services.get_mut(&key) {
            None => {
                let id = match &table {
                    Some((id, _)) => *id,
                    None => self.ids.alloc()?,
                };
                for (slot, backend) in (0..).zip(&want.backends) {
                    maps.set_backend(&BackendKey { service: id, slot }, backend)?;
                }
                let slots =
                    Slots { id, backends: want.backends, affinity: want.affinity, maglev: table.map(|(_, t)| t) };
                maps.set_service(&key, &slots.value()?)?;
                self.services.insert(key, slots);
                stats.services_added = 1;
            }
            Some(slots) => {
                slots.affinity = want.affinity;
                // Without a table now, the old one (if any) goes after the flag is cleared.
                let (old, new) = match table {
                    Some((_, table)) => (None, Some(table)),
                    None => (slots.maglev.take(), None),
                };
                slots.maglev = new;
                let published = update_slots(&mut maps, &key, slots, &want.backends)?;
                let after = slots.value()?;
                let changed =
                    before.is_none_or(|b| (b.affinity_timeout, b.flags) != (after.affinity_timeout, after.flags));
                if changed && !published {
                    maps.set_service(&key, &after)?;
                }
                if let Some(mut old) = old {
                    update_table(&mut maps, slots.id, &mut old, &[])?;
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

/// Makes the Maglev table of service `id` hold `want` ([`TABLE_SIZE`] entries, or none), writing
/// or deleting only the entries that differ from `table`, which it updates.
fn update_table(maps: &mut impl LbMaps, id: u32, table: &mut Table, want: &[Backend]) -> Result<(), Error> {
    for (index, entry) in (0..MAGLEV_TABLE_SIZE).zip(table.iter_mut()) {
        let wanted = want.get(index as usize).copied();
        if *entry == wanted {
            continue;
        }
        let key = MaglevKey { service: id, index };
        match &wanted {
            Some(backend) => maps.set_maglev(&key, backend)?,
            None => maps.remove_maglev(&key)?,
        }
        *entry = wanted;
    }
    Ok(())
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

    fn set_maglev(&mut self, key: &MaglevKey, value: &Backend) -> Result<(), Error> {
        self.writes += 1;
        self.maps.set_maglev(key, value)
    }

    fn remove_maglev(&mut self, key: &MaglevKey) -> Result<(), Error> {
        self.writes += 1;
        self.maps.remove_maglev(key)
    }

    fn maglev_entries(&self) -> Result<Vec<(MaglevKey, Backend)>, Error> {
        self.maps.maglev_entries()
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
        maglev: BTreeMap<MaglevKey, Backend>,
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

        fn set_maglev(&mut self, key: &MaglevKey, value: &Backend) -> Result<(), Error> {
            self.maglev.insert(*key, *value);
            Ok(())
        }

        fn remove_maglev(&mut self, key: &MaglevKey) -> Result<(), Error> {
            self.maglev.remove(key);
            Ok(())
        }

        fn maglev_entries(&self) -> Result<Vec<(MaglevKey, Backend)>, Error> {
            Ok(self.maglev.iter().map(|(k, v)| (*k, *v)).collect())
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
            // Each flagged service has exactly its table; no other entries.
            let mut tables = 0;
            for value in self.services.values().filter(|v| v.maglev()) {
                let backends: Vec<Backend> =
                    (0..value.count).map(|slot| self.backends[&BackendKey { service: value.id, slot }]).collect();
                let table = self.table(value.id);
                assert_eq!(table, maglev::backend_table(&backends), "table of service {}", value.id);
                tables += table.len();
            }
            assert_eq!(tables, self.maglev.len(), "Maglev entries of no flagged service");
            view
        }

        /// Service `id`'s Maglev entries in index order.
        fn table(&self, id: u32) -> Vec<Backend> {
            self.maglev
                .range(MaglevKey { service: id, index: 0 }..MaglevKey { service: id + 1, index: 0 })
                .map(|(_, b)| *b)
                .collect()
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
            maglev: false,
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
        maps.services.insert(broken, ServiceValue { id: 5, count: 2, affinity_timeout: 0, flags: 0 });
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

    #[test]
    fn maglev_tables_follow_the_flag_and_the_backends() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        let mut web = service(1, Protocol::Tcp, &[1, 2, 3, 4, 5]);
        web.maglev = true;
        let stats = programmed.sync(&mut maps, std::slice::from_ref(&web)).expect("sync");
        assert_eq!(stats, SyncStats { services_added: 1, map_writes: 5 + TABLE_SIZE + 1, ..SyncStats::default() });
        let value = |maps: &FakeMaps| *maps.services.values().next().expect("one service");
        assert_eq!(value(&maps).flags, SERVICE_F_MAGLEV);
        maps.view();
        assert_eq!(programmed.table()[0], web);
        assert_eq!(programmed.sync(&mut maps, std::slice::from_ref(&web)).expect("again"), SyncStats::default());

        // One backend of five goes: its entries (and a few more) are rewritten, plus three
        // writes for the slots.
        let before = maps.table(1);
        web.backends.remove(1);
        let stats = programmed.upsert(&mut maps, &web).expect("remove one");
        let changed = before.iter().zip(maps.table(1)).filter(|(b, a)| **b != *a).count();
        assert_eq!(stats.map_writes, changed + 3);
        assert!(changed < TABLE_SIZE / 5 + TABLE_SIZE / 20, "{changed} entries rewritten");
        maps.view();

        // Read back after a restart, then resynced without writes.
        let mut programmed = Programmed::read(&mut maps).expect("read");
        assert_eq!(programmed.sync(&mut maps, std::slice::from_ref(&web)).expect("resync"), SyncStats::default());

        // A lost entry is restored by the next change, an orphan dropped by the next read.
        maps.maglev.remove(&MaglevKey { service: 1, index: 7 });
        maps.maglev.insert(MaglevKey { service: 9, index: 0 }, Backend::new(backend(9, 1)));
        let mut programmed = Programmed::read(&mut maps).expect("read");
        assert!(!maps.maglev.contains_key(&MaglevKey { service: 9, index: 0 }));
        web.backends.push(backend(6, 8080));
        programmed.upsert(&mut maps, &web).expect("add one");
        maps.view();

        // The flag off: the value first, then every entry.
        web.maglev = false;
        let stats = programmed.upsert(&mut maps, &web).expect("flag off");
        assert_eq!(stats, SyncStats { services_updated: 1, map_writes: 1 + TABLE_SIZE, ..SyncStats::default() });
        assert!(maps.maglev.is_empty());
        assert_eq!(value(&maps).flags, 0);

        // On again, then the service goes: every entry with it.
        web.maglev = true;
        programmed.upsert(&mut maps, &web).expect("flag on");
        assert_eq!(maps.maglev.len(), TABLE_SIZE);
        let stats = programmed.sync(&mut maps, &[]).expect("remove");
        assert_eq!(stats, SyncStats { services_removed: 1, map_writes: 1 + 5 + TABLE_SIZE, ..SyncStats::default() });
        assert!(maps.maglev.is_empty() && maps.backends.is_empty());
    }

    #[test]
    fn maglev_tables_are_bounded() {
        let mut maps = FakeMaps::default();
        let mut programmed = Programmed::default();
        // Without backends a table has no entries, which keeps this test cheap.
        let table: Vec<Service> = (0..=MAGLEV_MAX_SERVICES)
            .map(|i| Service {
                vip: Ipv4Addr::from_bits(0x0a60_0000 + i),
                port: 80,
                proto: Protocol::Tcp,
                backends: Vec::new(),
                affinity: None,
                maglev: true,
            })
            .collect();
        programmed.sync(&mut maps, &table).expect("sync");
        let flagged = maps.services.values().filter(|v| v.maglev()).count();
        assert_eq!(flagged, MAGLEV_MAX_SERVICES as usize, "one service over the bound goes without");
        // One leaves: the one without a table gets the room on the next sync.
        programmed.sync(&mut maps, &table[1..]).expect("sync");
        assert!(maps.services.values().all(ServiceValue::maglev));
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
                let mut s = service(vip, proto, &backends);
                s.maglev = next(3) == 0;
                if !table.iter().any(|t: &Service| t.key() == s.key()) {
                    table.push(s);
                }
            }
            programmed.sync(&mut maps, &table).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(maps.view(), expected(&table), "round {round}");
        }
    }
}
