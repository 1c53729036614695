//! Container network namespaces: opening `CNI_NETNS` and running code inside it.
//!
//! `setns` changes the namespace of the calling thread only, so [`NetNs::run`] does it on a fresh thread
//! that ends afterwards: the plugin's main thread never leaves the host namespace. Sockets keep the
//! namespace they were created in, which is how [`NetNs::netlink`] hands a container-side netlink socket
//! back to the main thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::{CniError, ErrorCode};
use crate::netlink::{Netlink, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("open network namespace {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("enter network namespace {} (is CNI_NETNS a network namespace?)", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("thread inside network namespace {} panicked", path.display())]
    Thread { path: PathBuf },
    #[error("inside network namespace {}", path.display())]
    Netlink {
        path: PathBuf,
        #[source]
        source: NetlinkError,
    },
}

impl From<NetnsError> for CniError {
    fn from(error: NetnsError) -> Self {
        let (code, msg) = match &error {
            NetnsError::Missing { .. } => (ErrorCode::UnknownContainer, "container network namespace not found"),
            NetnsError::Enter { .. } => (ErrorCode::InvalidEnvironment, "CNI_NETNS is not a network namespace"),
            NetnsError::Open { .. } => (ErrorCode::Io, "cannot open CNI_NETNS"),
            NetnsError::Thread { .. } | NetnsError::Netlink { .. } => (ErrorCode::Kernel, "container namespace"),
        };
        CniError::new(code, msg, crate::error::chain(&error))
    }
}

/// An open network namespace file.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        match File::open(path) {
            Ok(file) => Ok(Self { file, path: path.to_path_buf() }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Err(NetnsError::Missing { path: path.to_path_buf() })
            }
            Err(source) => Err(NetnsError::Open { path: path.to_path_buf(), source }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `work` on a thread inside this namespace; the thread exits afterwards.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|source| NetnsError::Enter { path: self.path.clone(), source })?;
                    Ok(work())
                })
                .join()
                .map_err(|_| NetnsError::Thread { path: self.path.clone() })?
        })
    }

    /// A netlink socket bound to this namespace, usable from any thread.
    pub fn netlink(&self) -> Result<Netlink, NetnsError> {
        self.run(Netlink::open)?.map_err(|source| NetnsError::Netlink { path: self.path.clone(), source })
    }
}
