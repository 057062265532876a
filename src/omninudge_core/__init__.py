"""omninudge_core"""
