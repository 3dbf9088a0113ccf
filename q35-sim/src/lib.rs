//! q35 device simulator (filled in by the simulator work).
