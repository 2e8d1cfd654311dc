//! unseat emulator
