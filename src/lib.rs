//! usertcp: a user-space TCP/IP stack with a built-in, Linux-exact epoll.
//!
//! This facade re-exports the workspace's crates so that examples and
//! applications depend on one package:
//!
//! - [`eventpoll`]: epoll in user space (wait queues, epitems in a red-black
//!   tree, a ready list, level- and edge-triggered delivery), with `EventFd`
//!   and pipes as event sources.
//!
//! The map of the whole project is in `README.md` and in `DESIGN.md`.
#![forbid(unsafe_code)]

pub use eventpoll;

/// The README's code blocks, compiled and run as doc tests so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
