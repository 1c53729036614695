//! The real [`RouteTable`]: the project's routes in the main table of the network namespace the
//! rtnetlink socket was opened in, through `rtnetlink`. Only routes with protocol
//! [`KEELSON_PROTO`] are listed; adds, replaces and deletes always carry that protocol, so the
//! kernel itself refuses to delete a route of someone else.

use std::net::Ipv4Addr;

use futures::TryStreamExt as _;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::routes::{Ipv4Net, KEELSON_PROTO, Route, RouteError, RouteKind, RouteTable};

/// Route table over an rtnetlink socket.
#[derive(Clone, Debug)]
pub struct NetlinkRouteTable {
    handle: Handle,
}

impl NetlinkRouteTable {
    /// Opens an rtnetlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime (must be called inside one). The socket stays
    /// in that namespace whatever thread uses it later.
    pub fn connect() -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    fn message(route: &Route) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.addr, route.dst.prefix)
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .protocol(RouteProtocol::from(KEELSON_PROTO))
            .priority(route.metric);
        builder = match route.kind {
            RouteKind::Via(gw) => builder.gateway(gw).scope(RouteScope::Universe),
            RouteKind::Unreachable => builder.kind(RouteType::Unreachable).scope(RouteScope::Universe),
        };
        builder.build()
    }
}

/// The project route a kernel route message describes, if it is one of ours.
fn parse(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if u8::from(h.protocol) != KEELSON_PROTO {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut metric = 0;
    let mut table = u32::from(h.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let kind = match (h.kind, gateway) {
        (RouteType::Unreachable, _) => RouteKind::Unreachable,
        (RouteType::Unicast, Some(gw)) => RouteKind::Via(gw),
        // Ours by protocol but of a shape we never install: report it so reconcile deletes it.
        (_, gw) => RouteKind::Via(gw.unwrap_or(Ipv4Addr::UNSPECIFIED)),
    };
    Some(Route { dst: Ipv4Net::new(dst, h.destination_prefix_length)?, kind, metric })
}

impl RouteTable for NetlinkRouteTable {
    async fn list(&mut self) -> Result<Vec<Route>, RouteError> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> =
            self.handle.route().get(req).execute().try_collect().await.map_err(RouteError::List)?;
        Ok(msgs.iter().filter_map(parse).collect())
    }

    async fn add(&mut self, route: &Route) -> Result<(), RouteError> {
        let err = |source| RouteError::Netlink { op: "add", route: route.to_string(), source };
        self.handle.route().add(Self::message(route)).execute().await.map_err(err)
    }

    async fn replace(&mut self, route: &Route) -> Result<(), RouteError> {
        let err = |source| RouteError::Netlink { op: "replace", route: route.to_string(), source };
        self.handle.route().add(Self::message(route)).replace().execute().await.map_err(err)
    }

    async fn delete(&mut self, route: &Route) -> Result<(), RouteError> {
        let err = |source| RouteError::Netlink { op: "delete", route: route.to_string(), source };
        self.handle.route().del(Self::message(route)).execute().await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_parse() {
        let routes = [
            Route::via("10.244.2.0/24".parse().expect("cidr"), Ipv4Addr::new(192, 168, 1, 2)),
            Route::unreachable("10.96.0.0/12".parse().expect("cidr")),
        ];
        for route in routes {
            assert_eq!(parse(&NetlinkRouteTable::message(&route)), Some(route));
        }
    }

    #[test]
    fn foreign_protocol_is_not_ours() {
        let route = Route::via("10.244.2.0/24".parse().expect("cidr"), Ipv4Addr::new(192, 168, 1, 2));
        let mut msg = NetlinkRouteTable::message(&route);
        msg.header.protocol = RouteProtocol::Static;
        assert_eq!(parse(&msg), None);
    }
}
