"""`morgue demo`: a private Redis, a prefork worker and a producer, and the UI on top of them."""
