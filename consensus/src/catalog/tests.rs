//! Unit and property tests of the catalog state machine.
