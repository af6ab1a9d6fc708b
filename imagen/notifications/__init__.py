"""In-app notices to one user: export ready, policy changed, business transfer, privacy request updates."""
