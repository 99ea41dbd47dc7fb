//! usertcp: a user-space TCP/IP stack with a built-in, Linux-exact epoll.
//!
//! This facade re-exports the workspace's crates so that examples and
//! applications depend on one package:
//!
//! - [`eventpoll`]: epoll in user space (wait queues, epitems in a red-black
//!   tree, a ready list, level- and edge-triggered delivery), with `EventFd`
//!   and pipes as event sources.
//! - [`netdev`]: devices the stack runs on (`Link::pair`, an in-memory link).
//! - [`netstack`]: the TCP/IP stack on smoltcp whose TCP events drive
//!   eventpoll, with POSIX-style sockets: run-to-completion
//!   ([`netstack::Stack`]) or on its own thread ([`NetThread`], whose
//!   [`Net`] handle, [`TcpListener`], [`TcpStream`] and [`Epoll`] are
//!   re-exported here).
//! - [`apps`]: the echo and HTTP servers, clients and run loop that the
//!   examples and the TAP end-to-end tests share, and the kernel-socket
//!   baseline server.
//! - [`sys`]: the few Linux calls std lacks (network namespaces, `poll(2)`,
//!   kernel epoll, `RLIMIT_NOFILE`): the facade's only `unsafe`.
//!
//! The map of the whole project is in `README.md` and in `DESIGN.md`.
#![deny(unsafe_code)]

pub mod apps;
pub mod sys;

pub use eventpoll;
pub use netdev;
pub use netstack;
pub use netstack::{Epoll, Net, NetThread, TcpListener, TcpStream};

/// The README's code blocks, compiled and run as doc tests so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
