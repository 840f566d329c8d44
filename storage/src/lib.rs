//! Muster storage: the WAL and snapshot crate. The format and code land with the durability issue.
