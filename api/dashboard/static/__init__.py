"""JS modules and CSS of the dashboard (a package only so that they ship with it)."""
