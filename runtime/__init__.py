"""The runtime: bundle format, profile selection, backends, the Runner. numpy and a backend only."""
