"""omninudge_adapters"""
