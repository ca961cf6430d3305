"""Synthetic reasoning data: questions -> page evidence -> traces -> answers -> SFT examples."""
