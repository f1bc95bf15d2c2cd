//! The RTP port pool: even ports of the configured range, handed out round-robin (a
//! freed port is reused last, so stray packets of an old call rarely reach a new one) and
//! returned when the endpoint's socket is dropped.

use crate::error::MediaError;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

pub(crate) struct PortPool {
    address: IpAddr,
    first: u16,
    last: u16,
    state: Mutex<PoolState>,
}

struct PoolState {
    in_use: HashSet<u16>,
    cursor: u32,
}

/// A port taken from the pool; returned on drop.
pub(crate) struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.state.lock().in_use.remove(&self.port);
    }
}

impl PortPool {
    pub(crate) fn new(address: IpAddr, first: u16, last: u16) -> Arc<Self> {
        Arc::new(PortPool {
            address,
            first,
            last,
            state: Mutex::new(PoolState {
                in_use: HashSet::new(),
                cursor: 0,
            }),
        })
    }

    fn count(&self) -> u32 {
        (u32::from(self.last) - u32::from(self.first)) / 2 + 1
    }

    /// Binds a UDP socket on the next free even port. Ports bound by someone else are
    /// skipped.
    pub(crate) fn bind(self: &Arc<Self>) -> Result<(UdpSocket, PortLease), MediaError> {
        let count = self.count();
        let mut st = self.state.lock();
        for i in 0..count {
            let idx = (st.cursor + i) % count;
            let port = (u32::from(self.first) + 2 * idx) as u16;
            if st.in_use.contains(&port) {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(self.address, port)) {
                Ok(sock) => {
                    st.in_use.insert(port);
                    st.cursor = (idx + 1) % count;
                    return Ok((
                        sock,
                        PortLease {
                            pool: self.clone(),
                            port,
                        },
                    ));
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port not bindable, trying the next");
                }
            }
        }
        Err(MediaError::NoFreePort {
            address: self.address,
            first: self.first,
            last: self.last,
        })
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.state.lock().in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausts_and_frees() {
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 23_470, 23_472);
        let a = pool.bind().unwrap();
        let b = pool.bind().unwrap();
        assert_ne!(a.1.port, b.1.port);
        assert!(a.1.port.is_multiple_of(2) && b.1.port.is_multiple_of(2));
        assert!(matches!(pool.bind(), Err(MediaError::NoFreePort { .. })));
        assert_eq!(pool.in_use(), 2);
        drop(a);
        assert_eq!(pool.in_use(), 1);
        let c = pool.bind().unwrap();
        assert_eq!(c.0.local_addr().unwrap().port(), c.1.port);
    }
}
