"""``meterline demo``: a realistic synthetic month of AI usage and the story it tells."""
