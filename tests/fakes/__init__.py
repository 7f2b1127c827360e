"""Real-protocol emulators of backends that cannot run on a test machine."""
