"""CSS and JavaScript of the console (a package so that wheels ship them)."""
