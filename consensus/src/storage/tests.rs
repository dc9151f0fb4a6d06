//! Model tests: the sled store and the in-memory store behave identically.
