"""The demo model: `hinet-deploy demo` (`run`) and how the shipped checkpoint was trained (`train`)."""
