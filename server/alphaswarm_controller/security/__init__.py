"""Transport security, caller authentication and authorization, audit and limits."""
